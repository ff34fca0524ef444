package cli

import (
	"bytes"
	"fmt"
	"io"
	"net/url"
	"os"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/egress/policy"
)

func (a *App) secretCmd() *cobra.Command {
	c := &cobra.Command{Use: "secret", Short: "Store API keys that VMs use without ever seeing them",
		Long: "Secrets are stored by the daemon (files of mode 0600 under its state directory), never inside a VM.\n" +
			"A VM given --secret NAME --secret-host HOST sees only a placeholder in $NAME; banger's egress\n" +
			"proxy replaces it with the real value on requests to HOST, and refuses it anywhere else."}
	c.AddCommand(a.secretSetCmd(), a.secretListCmd(), a.secretRmCmd())
	return c
}

func (a *App) secretSetCmd() *cobra.Command {
	var fromEnv, fromFile string
	c := &cobra.Command{
		Use:   "set NAME",
		Short: "Store a secret (from stdin unless --from-env or --from-file)",
		Long: "Store a secret under NAME, replacing any value it had. The value is read from stdin (one\n" +
			"trailing newline removed), from the environment variable --from-env or from the file\n" +
			"--from-file (one trailing newline removed); at most 64 KiB.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if !policy.ValidSecretName(name) {
				return fmt.Errorf("secret name %q: want 1-64 letters, digits, _ . - (not starting with . or -)", name)
			}
			if fromEnv != "" && fromFile != "" {
				return fmt.Errorf("give at most one of --from-env and --from-file")
			}
			var value []byte
			switch {
			case fromEnv != "":
				v := a.getenv(fromEnv)
				if v == "" {
					return fmt.Errorf("--from-env: %s is not set or empty", fromEnv)
				}
				value = []byte(v)
			case fromFile != "":
				f, err := os.Open(fromFile)
				if err != nil {
					return fmt.Errorf("--from-file: %w", err)
				}
				value, err = io.ReadAll(io.LimitReader(f, api.MaxSecretBytes+2))
				f.Close()
				if err != nil {
					return fmt.Errorf("--from-file: %w", err)
				}
			default:
				var err error
				if value, err = io.ReadAll(io.LimitReader(a.Stdin, api.MaxSecretBytes+2)); err != nil {
					return fmt.Errorf("read the secret from stdin: %w", err)
				}
			}
			if fromEnv == "" {
				value = bytes.TrimSuffix(bytes.TrimSuffix(value, []byte("\n")), []byte("\r"))
			}
			if len(value) == 0 {
				return fmt.Errorf("secret %q: empty value", name)
			}
			if len(value) > api.MaxSecretBytes {
				return fmt.Errorf("secret %q: larger than %d bytes", name, api.MaxSecretBytes)
			}
			return a.call(cmd.Context(), "PUT", "/secrets/"+url.PathEscape(name), api.SecretSetParams{Value: value}, nil)
		},
	}
	c.Flags().StringVar(&fromEnv, "from-env", "", "read the value from this environment variable")
	c.Flags().StringVar(&fromFile, "from-file", "", "read the value from this file")
	return c
}

func (a *App) secretListCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the stored secrets' names (never their values)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var l api.SecretList
			if err := a.call(cmd.Context(), "GET", "/secrets", nil, &l); err != nil {
				return err
			}
			if asJSON {
				return printJSONList(a.Stdout, l.Names)
			}
			for _, n := range l.Names {
				fmt.Fprintln(a.Stdout, n)
			}
			return nil
		},
	}
	addJSONFlag(c, &asJSON)
	return c
}

func (a *App) secretRmCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"remove"},
		Short:   "Remove a secret",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd.Context(), "DELETE", "/secrets/"+url.PathEscape(args[0]), nil, nil)
		},
	}
}
