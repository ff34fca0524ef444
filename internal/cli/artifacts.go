package cli

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/model"
)

func absPath(p string) (string, error) {
	if p == "" {
		return "", nil
	}
	return filepath.Abs(p)
}

func (a *App) kernelCmd() *cobra.Command {
	c := &cobra.Command{Use: "kernel", Short: "Import and manage guest kernels"}
	var from string
	imp := &cobra.Command{
		Use:   "import NAME --from PATH",
		Short: "Import a Debian kernel package (.deb) or an extracted kernel tree",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := model.ValidateName(args[0]); err != nil {
				return fmt.Errorf("invalid kernel name: %w", err)
			}
			if from == "" {
				return fmt.Errorf("--from is required: a linux-image .deb or an extracted kernel tree")
			}
			src, err := absPath(from)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if err := a.ensureDaemon(ctx); err != nil {
				return err
			}
			var k model.Kernel
			if err := a.client.Stream(ctx, "POST", "/kernels", api.KernelImportParams{Name: args[0], From: src}, a.progressPrinter(false), &k); err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "%s\t%s\n", k.Name, k.Version)
			return nil
		},
	}
	imp.Flags().StringVar(&from, "from", "", "linux-image-*.deb or a directory laid out like `dpkg -x` output")
	list := &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List kernels", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var ks []model.Kernel
			if err := a.call(cmd.Context(), "GET", "/kernels", nil, &ks); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(a.Stdout, 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tVERSION\tIMPORTED")
			for _, k := range ks {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", k.Name, k.Version, ago(k.CreatedAt))
			}
			return tw.Flush()
		},
	}
	show := &cobra.Command{
		Use: "show NAME", Short: "Show a kernel", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var k model.Kernel
			if err := a.call(cmd.Context(), "GET", "/kernels/"+url.PathEscape(args[0]), nil, &k); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(a.Stdout, 0, 8, 2, ' ', 0)
			fmt.Fprintf(tw, "name\t%s\nversion\t%s\nvmlinux\t%s\ninitramfs\t%s\nsha256\t%s\nsource\t%s\nimported\t%s\n",
				k.Name, k.Version, k.Vmlinux, k.Initramfs, k.SHA256, k.Source, k.CreatedAt.Local().Format(time.RFC3339))
			return tw.Flush()
		},
	}
	rm := &cobra.Command{
		Use: "rm NAME", Aliases: []string{"delete"}, Short: "Remove a kernel no image uses", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd.Context(), "DELETE", "/kernels/"+url.PathEscape(args[0]), nil, nil)
		},
	}
	c.AddCommand(imp, list, show, rm)
	return c
}

func (a *App) imageCmd() *cobra.Command {
	c := &cobra.Command{Use: "image", Short: "Build and manage root filesystem images"}
	var p api.ImageBuildParams
	var packages string
	build := &cobra.Command{
		Use:   "build NAME (--from-dir DIR | --debootstrap SUITE)",
		Short: "Build an ext4 image from a directory or with debootstrap",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p.Name = args[0]
			if err := model.ValidateName(p.Name); err != nil {
				return fmt.Errorf("invalid image name: %w", err)
			}
			if (p.FromDir == "") == (p.Debootstrap == "") {
				return fmt.Errorf("give exactly one of --from-dir or --debootstrap")
			}
			var err error
			if p.FromDir, err = absPath(p.FromDir); err != nil {
				return err
			}
			if packages != "" {
				p.Packages = strings.Split(packages, ",")
			}
			ctx := cmd.Context()
			if err := a.ensureDaemon(ctx); err != nil {
				return err
			}
			var img model.Image
			if err := a.client.Stream(ctx, "POST", "/images", p, a.progressPrinter(false), &img); err != nil {
				return err
			}
			fmt.Fprintln(a.Stdout, img.Name)
			return nil
		},
	}
	build.Flags().StringVar(&p.FromDir, "from-dir", "", "root filesystem tree to pack")
	build.Flags().StringVar(&p.Debootstrap, "debootstrap", "", "Debian suite to debootstrap (e.g. bookworm); needs root")
	build.Flags().StringVar(&p.Mirror, "mirror", "", "Debian mirror URL for --debootstrap")
	build.Flags().StringVar(&packages, "packages", "", "extra packages for --debootstrap, comma-separated")
	build.Flags().StringVar(&p.Kernel, "kernel", "", "kernel to pair with (default: the only one)")
	build.Flags().StringVar(&p.Size, "size", "", "image size, e.g. 4G (default 4G; the file is sparse)")

	var rp api.ImageRegisterParams
	register := &cobra.Command{
		Use:   "register NAME --rootfs FILE --kernel K",
		Short: "Register an existing ext4 root filesystem, used in place",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rp.Name = args[0]
			if err := model.ValidateName(rp.Name); err != nil {
				return fmt.Errorf("invalid image name: %w", err)
			}
			var err error
			if rp.Rootfs, err = absPath(rp.Rootfs); err != nil {
				return err
			}
			if rp.Rootfs == "" {
				return fmt.Errorf("--rootfs is required")
			}
			var img model.Image
			if err := a.call(cmd.Context(), "POST", "/images/register", rp, &img); err != nil {
				return err
			}
			fmt.Fprintln(a.Stdout, img.Name)
			return nil
		},
	}
	register.Flags().StringVar(&rp.Rootfs, "rootfs", "", "ext4 image file")
	register.Flags().StringVar(&rp.Kernel, "kernel", "", "kernel to pair with (default: the only one)")

	list := &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List images", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var imgs []model.Image
			if err := a.call(cmd.Context(), "GET", "/images", nil, &imgs); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(a.Stdout, 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tKERNEL\tSIZE\tSOURCE\tCREATED")
			for _, i := range imgs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", i.Name, i.Kernel, humanBytes(i.SizeBytes), i.Source, ago(i.CreatedAt))
			}
			return tw.Flush()
		},
	}
	show := &cobra.Command{
		Use: "show NAME", Short: "Show an image", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var i model.Image
			if err := a.call(cmd.Context(), "GET", "/images/"+url.PathEscape(args[0]), nil, &i); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(a.Stdout, 0, 8, 2, ' ', 0)
			fmt.Fprintf(tw, "name\t%s\nkernel\t%s\nrootfs\t%s\nsize\t%s\nsource\t%s\ncreated\t%s\n",
				i.Name, i.Kernel, i.Rootfs, humanBytes(i.SizeBytes), i.Source, i.CreatedAt.Local().Format(time.RFC3339))
			return tw.Flush()
		},
	}
	rm := &cobra.Command{
		Use: "rm NAME", Aliases: []string{"delete"}, Short: "Remove an image no VM uses", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd.Context(), "DELETE", "/images/"+url.PathEscape(args[0]), nil, nil)
		},
	}
	c.AddCommand(build, register, list, show, rm)
	return c
}
