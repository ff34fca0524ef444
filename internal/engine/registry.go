package engine

import (
	"errors"
	"fmt"
	"slices"
)

// Engine is a registered Driver with its optional capabilities, looked up
// once at registration. A nil capability means the driver lacks it.
type Engine struct {
	Driver
	Cleaner     Cleaner
	CtrlAltDel  CtrlAltDeler
	Checker     Checker
	Pauser      Pauser
	Snapshotter Snapshotter
}

// Registry holds the drivers a daemon runs VMs with, by name. It is
// immutable once made and safe for concurrent use.
type Registry struct {
	def     *Engine
	engines map[string]*Engine
	names   []string
}

// NewRegistry registers drivers; the first is the default engine (what
// Auto and a VM without a recorded engine mean). Empty and duplicate names
// are refused.
func NewRegistry(drivers ...Driver) (*Registry, error) {
	if len(drivers) == 0 {
		return nil, errors.New("engine registry: no driver")
	}
	r := &Registry{engines: map[string]*Engine{}}
	for _, d := range drivers {
		name := d.Name()
		if name == "" || name == Auto {
			return nil, fmt.Errorf("engine registry: driver name %q is reserved", name)
		}
		if _, dup := r.engines[name]; dup {
			return nil, fmt.Errorf("engine registry: driver %q registered twice", name)
		}
		e := &Engine{Driver: d}
		e.Cleaner, _ = d.(Cleaner)
		e.CtrlAltDel, _ = d.(CtrlAltDeler)
		e.Checker, _ = d.(Checker)
		e.Pauser, _ = d.(Pauser)
		e.Snapshotter, _ = d.(Snapshotter)
		r.engines[name] = e
		r.names = append(r.names, name)
		if r.def == nil {
			r.def = e
		}
	}
	return r, nil
}

// Default is the default engine.
func (r *Registry) Default() *Engine { return r.def }

// Names lists the registered engines, the default first.
func (r *Registry) Names() []string { return slices.Clone(r.names) }

// ErrUnknown reports an engine this registry does not have.
var ErrUnknown = errors.New("unknown engine")

// Lookup returns the engine called name; "" and Auto give the default. An
// engine that is not registered fails with an error wrapping ErrUnknown.
func (r *Registry) Lookup(name string) (*Engine, error) {
	if name == "" || name == Auto {
		return r.def, nil
	}
	if e := r.engines[name]; e != nil {
		return e, nil
	}
	return nil, fmt.Errorf("engine %q: %w", name, ErrUnknown)
}
