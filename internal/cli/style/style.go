// Package style colours the command line's output for people: ANSI styles
// when the output is a terminal, the plain text otherwise.
//
// Styling is on only when the writer is a terminal, NO_COLOR is unset or
// empty (https://no-color.org) and TERM is not "dumb". The decision is a
// property of a Style value, made once from a writer and an environment,
// so that nothing depends on global state.
package style

import (
	"io"

	"golang.org/x/term"
)

// Style renders text with or without ANSI escapes. The zero value is
// plain.
type Style struct{ on bool }

// New decides whether output to w is styled. getenv looks variables up
// (os.Getenv in production); nil means an empty environment.
func New(w io.Writer, getenv func(string) string) Style {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	if getenv("NO_COLOR") != "" || getenv("TERM") == "dumb" {
		return Style{}
	}
	return Style{on: IsTerminal(w)}
}

// Plain is a Style that never styles.
func Plain() Style { return Style{} }

// Forced is a Style that always styles (for tests and previews).
func Forced() Style { return Style{on: true} }

// Enabled reports whether the style emits escapes.
func (s Style) Enabled() bool { return s.on }

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(f.Fd()))
}

// ANSI select graphic rendition codes.
const (
	codeBold   = "1"
	codeDim    = "2"
	codeRed    = "31"
	codeGreen  = "32"
	codeYellow = "33"
)

func (s Style) wrap(code, text string) string {
	if !s.on || text == "" {
		return text
	}
	return "\x1b[" + code + "m" + text + "\x1b[0m"
}

// Bold renders text bold.
func (s Style) Bold(text string) string { return s.wrap(codeBold, text) }

// Dim renders text faint, for what matters less (timings, ids).
func (s Style) Dim(text string) string { return s.wrap(codeDim, text) }

// Red renders text red.
func (s Style) Red(text string) string { return s.wrap(codeRed, text) }

// Green renders text green.
func (s Style) Green(text string) string { return s.wrap(codeGreen, text) }

// Yellow renders text yellow.
func (s Style) Yellow(text string) string { return s.wrap(codeYellow, text) }

// BoldRed renders text bold and red, e.g. the prefix of an error.
func (s Style) BoldRed(text string) string { return s.wrap(codeBold+";"+codeRed, text) }

// Pass renders a success word (green).
func (s Style) Pass(text string) string { return s.Green(text) }

// Warn renders a warning word (yellow).
func (s Style) Warn(text string) string { return s.Yellow(text) }

// Fail renders a failure word (bold red).
func (s Style) Fail(text string) string { return s.BoldRed(text) }
