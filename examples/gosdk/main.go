// Command gosdk is a runnable example of banger's Go SDK (banger/pkg/banger):
// it creates a VM, runs a command in it with its output streamed here,
// writes and reads back a file, and deletes the VM.
//
//	go run ./examples/gosdk [-image debian] [-- CMD ARGS...]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"

	"banger/pkg/banger"
)

func main() {
	image := flag.String("image", "", "image of the VM (default: the daemon's default_image)")
	addr := flag.String("addr", "", "daemon address: unix:///PATH or tcp://HOST:PORT (default: the CLI's socket)")
	token := flag.String("token-file", "", "bearer token file for a tcp:// address")
	flag.Parse()
	argv := flag.Args()
	if len(argv) == 0 {
		argv = []string{"uname", "-a"}
	}
	if err := run(*image, *addr, *token, argv); err != nil {
		fmt.Fprintln(os.Stderr, "gosdk:", err)
		os.Exit(1)
	}
}

func run(image, addr, tokenFile string, argv []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	opts := []banger.Option{banger.WithProgress(func(p banger.Progress) {
		if p.DurationMS > 0 {
			fmt.Fprintf(os.Stderr, "  %s (%d ms)\n", p.Stage, p.DurationMS)
		}
	})}
	if addr != "" {
		opts = append(opts, banger.WithAddress(addr))
	}
	if tokenFile != "" {
		opts = append(opts, banger.WithTokenFile(tokenFile))
	}
	c, err := banger.New(opts...)
	if err != nil {
		return err
	}
	vm, err := c.Create(ctx, banger.CreateParams{Image: image})
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	defer c.Delete(context.Background(), vm.Name)
	fmt.Fprintf(os.Stderr, "vm %s is up\n", vm.Name)

	st, err := c.Exec(ctx, vm.Name, banger.Cmd{Argv: argv, Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr})
	if err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	fmt.Fprintf(os.Stderr, "%s exited with %d\n", strings.Join(argv, " "), st.Code)

	files := c.Files(vm.Name)
	if _, err := files.Write(ctx, "/root/hello.txt", strings.NewReader("hello from the Go SDK\n"), banger.WriteOptions{}); err != nil {
		return fmt.Errorf("write file: %w", err)
	}
	b, err := files.Read(ctx, "/root/hello.txt", 1<<20)
	if err != nil {
		return fmt.Errorf("read file: %w", err)
	}
	fmt.Fprintf(os.Stderr, "read back: %s", b)
	return nil
}
