package cli

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

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
			pr := a.progress(false)
			err = a.client.Stream(ctx, "POST", "/kernels", api.KernelImportParams{Name: args[0], From: src}, pr.Event, &k)
			pr.Done()
			if err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "%s\t%s\n", k.Name, k.Version)
			return nil
		},
	}
	imp.Flags().StringVar(&from, "from", "", "linux-image-*.deb or a directory laid out like `dpkg -x` output")
	var listJSON bool
	list := &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List kernels", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var ks []model.Kernel
			if err := a.call(cmd.Context(), "GET", "/kernels", nil, &ks); err != nil {
				return err
			}
			if listJSON {
				return printJSONList(a.Stdout, ks)
			}
			t := newTable(a.Stdout, "name", "version", "imported")
			for _, k := range ks {
				t.row(k.Name, k.Version, ago(k.CreatedAt))
			}
			return t.flush()
		},
	}
	addJSONFlag(list, &listJSON)
	var showJSON bool
	show := &cobra.Command{
		Use: "show NAME", Short: "Show a kernel", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var k model.Kernel
			if err := a.call(cmd.Context(), "GET", "/kernels/"+url.PathEscape(args[0]), nil, &k); err != nil {
				return err
			}
			if showJSON {
				return printJSON(a.Stdout, k)
			}
			t := newTable(a.Stdout)
			t.row("name", k.Name)
			t.row("version", k.Version)
			t.row("vmlinux", k.Vmlinux)
			t.row("initramfs", k.Initramfs)
			t.row("sha256", k.SHA256)
			t.row("source", k.Source)
			t.row("imported", timestamp(k.CreatedAt))
			return t.flush()
		},
		ValidArgsFunction: a.completeKernelArgs(1),
	}
	addJSONFlag(show, &showJSON)
	rm := &cobra.Command{
		Use: "rm NAME", Aliases: []string{"delete"}, Short: "Remove a kernel no image uses", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd.Context(), "DELETE", "/kernels/"+url.PathEscape(args[0]), nil, nil)
		},
		ValidArgsFunction: a.completeKernelArgs(1),
	}
	c.AddCommand(imp, a.kernelPullCmd(), list, show, rm)
	return c
}

func (a *App) imageCmd() *cobra.Command {
	c := &cobra.Command{Use: "image", Short: "Build and manage root filesystem images"}
	var p api.ImageBuildParams
	var packages string
	var copies []string
	build := &cobra.Command{
		Use:   "build NAME (--from-dir DIR | --debootstrap SUITE | --from-image BASE [--copy SRC:DST]... [--run CMD]...)",
		Short: "Build an ext4 image from a directory, with debootstrap, or by customising another image",
		Long: `Build an ext4 image.

  --from-dir DIR          pack a root filesystem tree
  --debootstrap SUITE     debootstrap a Debian suite (needs root)
  --from-image BASE       boot BASE in a throwaway VM, apply every --copy then
                          every --run in order through the guest agent, power
                          it off cleanly and save its disk as the new image.
                          A failing --run fails the build and registers nothing.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p.Name = args[0]
			if err := model.ValidateName(p.Name); err != nil {
				return fmt.Errorf("invalid image name: %w", err)
			}
			sources := 0
			for _, s := range []string{p.FromDir, p.Debootstrap, p.FromImage} {
				if s != "" {
					sources++
				}
			}
			if sources != 1 {
				return fmt.Errorf("give exactly one of --from-dir, --debootstrap or --from-image")
			}
			if p.FromImage == "" && (len(p.Run) > 0 || len(copies) > 0 || p.NAT) {
				return fmt.Errorf("--run, --copy and --nat need --from-image")
			}
			for _, c := range copies {
				src, dst, ok := strings.Cut(c, ":")
				if !ok || src == "" || !strings.HasPrefix(dst, "/") {
					return fmt.Errorf("--copy %q: want HOSTPATH:/GUEST/PATH", c)
				}
				abs, err := filepath.Abs(src)
				if err != nil {
					return err
				}
				if _, err := os.Lstat(abs); err != nil {
					return fmt.Errorf("--copy: %w", err)
				}
				p.Copy = append(p.Copy, api.ImageCopy{Src: abs, Dst: dst})
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
			pr := a.progress(false)
			err = a.client.Stream(ctx, "POST", "/images", p, pr.Event, &img)
			pr.Done()
			if err != nil {
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
	build.Flags().StringVar(&p.FromImage, "from-image", "", "customise this image (see --copy, --run)")
	build.Flags().StringArrayVar(&p.Run, "run", nil, "shell command to run in the build VM (repeatable, in order)")
	build.Flags().StringArrayVar(&copies, "copy", nil, "copy a host file or directory into the build VM, HOSTPATH:/GUEST/PATH (repeatable)")
	build.Flags().BoolVar(&p.NAT, "nat", false, "let the build VM reach the network (user-mode networking), e.g. to install packages")
	build.RegisterFlagCompletionFunc("from-image", a.completeImageFlag)
	build.RegisterFlagCompletionFunc("kernel", a.completeKernelFlag)

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
	register.RegisterFlagCompletionFunc("kernel", a.completeKernelFlag)

	var listJSON bool
	list := &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List images", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var imgs []model.Image
			if err := a.call(cmd.Context(), "GET", "/images", nil, &imgs); err != nil {
				return err
			}
			if listJSON {
				return printJSONList(a.Stdout, imgs)
			}
			t := newTable(a.Stdout, "name", "kernel", "size", "source", "created")
			for _, i := range imgs {
				t.row(i.Name, i.Kernel, humanBytes(i.SizeBytes), i.Source, ago(i.CreatedAt))
			}
			return t.flush()
		},
	}
	addJSONFlag(list, &listJSON)
	var showJSON bool
	show := &cobra.Command{
		Use: "show NAME", Short: "Show an image", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var i model.Image
			if err := a.call(cmd.Context(), "GET", "/images/"+url.PathEscape(args[0]), nil, &i); err != nil {
				return err
			}
			if showJSON {
				return printJSON(a.Stdout, i)
			}
			t := newTable(a.Stdout)
			t.row("name", i.Name)
			t.row("kernel", i.Kernel)
			t.row("rootfs", i.Rootfs)
			t.row("size", humanBytes(i.SizeBytes))
			t.row("source", i.Source)
			t.row("created", timestamp(i.CreatedAt))
			return t.flush()
		},
		ValidArgsFunction: a.completeImageArgs(1),
	}
	addJSONFlag(show, &showJSON)
	rm := &cobra.Command{
		Use: "rm NAME", Aliases: []string{"delete"}, Short: "Remove an image no VM uses", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd.Context(), "DELETE", "/images/"+url.PathEscape(args[0]), nil, nil)
		},
		ValidArgsFunction: a.completeImageArgs(1),
	}
	c.AddCommand(build, a.imagePullCmd(), a.imageExportCmd(), register, list, show, rm)
	return c
}
