package banger_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"strings"

	"banger/pkg/banger"
)

// A sandbox's life: create a VM, run a command in it, move a file in and
// out, delete the VM.
func Example() {
	ctx := context.Background()
	c, err := banger.New() // the daemon's socket, found as the CLI finds it
	if err != nil {
		log.Fatal(err)
	}
	vm, err := c.Create(ctx, banger.CreateParams{Image: "debian"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Delete(context.Background(), vm.Name)

	st, err := c.Exec(ctx, vm.Name, banger.Cmd{
		Argv:   []string{"sh", "-c", "cat; echo oops >&2; exit 3"},
		Stdin:  strings.NewReader("hello\n"),
		Stdout: os.Stdout,
		Stderr: os.Stderr,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("exit code", st.Code)

	files := c.Files(vm.Name)
	if _, err := files.Write(ctx, "/root/notes.txt", strings.NewReader("some notes\n"), banger.WriteOptions{Mode: 0o600}); err != nil {
		log.Fatal(err)
	}
	b, err := files.Read(ctx, "/root/notes.txt", 1<<20)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s", b)
}

// Reaching a daemon on another machine or from a container: its config
// has api_listen = "IP:PORT", and the client gets a copy of its token
// file.
func ExampleWithAddress() {
	c, err := banger.New(banger.WithAddress("tcp://10.0.0.5:7070"), banger.WithTokenFile("/run/secrets/banger-api-token"))
	if err != nil {
		log.Fatal(err)
	}
	p, err := c.Ping(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("daemon", p.Version)
}

// Ship a repository, run its tests, take the guest's edits back.
func ExampleClient_PrepareWorkspace() {
	ctx := context.Background()
	c, err := banger.New()
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.PrepareWorkspace(ctx, "dev", ".", banger.WorkspaceOptions{}); err != nil {
		log.Fatal(err)
	}
	st, err := c.Exec(ctx, "dev", banger.Cmd{Argv: []string{"make", "test"}, Stdout: os.Stdout, Stderr: os.Stderr})
	if err != nil {
		log.Fatal(err)
	}
	patch, err := os.Create("guest.patch")
	if err != nil {
		log.Fatal(err)
	}
	defer patch.Close()
	if err := c.ExportWorkspace(ctx, "dev", patch, ""); err != nil {
		log.Fatal(err)
	}
	fmt.Println("tests exited", st.Code)
}

// Failures the daemon reports carry its code.
func ExampleIsNotFound() {
	c, err := banger.New()
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.Get(context.Background(), "no-such-vm"); banger.IsNotFound(err) {
		fmt.Println("no such vm")
	}
}
