package cli

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/catalog"
	"banger/internal/fsutil"
	"banger/internal/model"
)

// printPull says what a pull did.
func (a *App) printPull(kind string, res api.PullResult) {
	if res.AlreadyPresent {
		fmt.Fprintf(a.Stdout, "%s %s is already installed\n", kind, res.Name)
		return
	}
	fmt.Fprintf(a.Stdout, "%s %s installed (%s)\n", kind, res.Name, res.Source)
}

func (a *App) kernelPullCmd() *cobra.Command {
	var cat string
	c := &cobra.Command{
		Use:   "pull NAME",
		Short: "Download a kernel from the catalog, verify it and import it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := model.ValidateName(args[0]); err != nil {
				return fmt.Errorf("invalid kernel name: %w", err)
			}
			src, err := catalogArg(cat)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if err := a.ensureDaemon(ctx); err != nil {
				return err
			}
			var res api.PullResult
			pr := a.progress(false)
			err = a.client.Stream(ctx, "POST", "/kernels/pull", api.KernelPullParams{Name: args[0], Catalog: src}, pr.Event, &res)
			pr.Done()
			if err != nil {
				return err
			}
			a.printPull("kernel", res)
			return nil
		},
	}
	c.Flags().StringVar(&cat, "catalog", "", "catalog file or URL (default: catalog_url from the config, else the built-in one)")
	return c
}

func (a *App) imagePullCmd() *cobra.Command {
	var p api.ImagePullParams
	c := &cobra.Command{
		Use:   "pull NAME|REGISTRY/REPO[:TAG|@DIGEST]",
		Short: "Install an image from the catalog or from any OCI/Docker registry",
		Long: `Install an image from the catalog (by name: the bundle is downloaded and
verified, and its kernel pulled when missing), or from an OCI or Docker
registry (by reference: docker.io/library/alpine:3.20, localhost:5000/app@sha256:...).
Registry images are flattened into an ext4 root filesystem; images without an
init system boot with banger's agent as PID 1.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p.Ref = args[0]
			if p.Name != "" {
				if err := model.ValidateName(p.Name); err != nil {
					return fmt.Errorf("invalid image name: %w", err)
				}
			}
			var err error
			if p.Catalog, err = catalogArg(p.Catalog); err != nil {
				return err
			}
			ctx := cmd.Context()
			if err := a.ensureDaemon(ctx); err != nil {
				return err
			}
			var res api.PullResult
			pr := a.progress(false)
			err = a.client.Stream(ctx, "POST", "/images/pull", p, pr.Event, &res)
			pr.Done()
			if err != nil {
				return err
			}
			a.printPull("image", res)
			return nil
		},
	}
	c.Flags().StringVar(&p.Name, "name", "", "register the image under this name (default: the catalog name, or derived from the reference)")
	c.Flags().StringVar(&p.Kernel, "kernel", "", "kernel to boot a registry image with (pulled from the catalog when missing)")
	c.Flags().StringVar(&p.Catalog, "catalog", "", "catalog file or URL (default: catalog_url from the config, else the built-in one)")
	c.RegisterFlagCompletionFunc("kernel", a.completeKernelFlag)
	return c
}

// catalogArg makes a catalog path absolute (the daemon resolves paths
// itself); URLs pass through.
func catalogArg(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	if u, err := url.Parse(s); err == nil && u.Scheme != "" {
		return s, nil
	}
	return filepath.Abs(s)
}

func (a *App) imageExportCmd() *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:   "export NAME -o FILE.tar.zst",
		Short: "Write an image as a bundle (.tar.zst with rootfs.ext4 and manifest.json) for a catalog",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return fmt.Errorf("-o FILE is required")
			}
			ctx := cmd.Context()
			if err := a.ensureDaemon(ctx); err != nil {
				return err
			}
			dst, err := filepath.Abs(out)
			if err != nil {
				return err
			}
			// A bundle is for publishing: readable like any new file.
			tmp, err := fsutil.CreateAtomic(dst, 0o644)
			if err != nil {
				return err
			}
			defer tmp.Abort()
			n, err := a.client.Download(ctx, "/images/"+url.PathEscape(args[0])+"/bundle", tmp)
			if err != nil {
				return err
			}
			if err := tmp.Commit(); err != nil {
				return err
			}
			fmt.Fprintf(a.Stderr, "wrote %s (%s)\n", dst, humanSize(n))
			return nil
		},
	}
	c.Flags().StringVarP(&out, "output", "o", "", "bundle file to write")
	c.ValidArgsFunction = a.completeImageArgs(1)
	return c
}

func (a *App) catalogCmd() *cobra.Command {
	var cat string
	var asJSON bool
	c := &cobra.Command{
		Use:   "catalog",
		Short: "List the kernels and images that can be pulled",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			src, err := catalogArg(cat)
			if err != nil {
				return err
			}
			var c catalog.Catalog
			if err := a.call(cmd.Context(), "GET", "/catalog?catalog="+url.QueryEscape(src), nil, &c); err != nil {
				return err
			}
			if asJSON {
				if c.Kernels == nil {
					c.Kernels = []catalog.KernelEntry{}
				}
				if c.Images == nil {
					c.Images = []catalog.ImageEntry{}
				}
				return printJSON(a.Stdout, c)
			}
			t := newTable(a.Stdout, "kind", "name", "details", "size")
			for _, k := range c.Kernels {
				t.row("kernel", k.Name, strings.TrimSpace(k.Version+" "+k.Format), humanSize(k.Size))
			}
			for _, i := range c.Images {
				t.row("image", i.Name, fmt.Sprintf("%s, kernel %s", i.Distro, i.Kernel), humanSize(i.Size))
			}
			return t.flush()
		},
	}
	c.Flags().StringVar(&cat, "catalog", "", "catalog file or URL (default: catalog_url from the config, else the built-in one)")
	addJSONFlag(c, &asJSON)
	return c
}
