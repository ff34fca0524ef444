package guest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	"banger/internal/agent"
	"banger/internal/api"
)

// maxWatchDirs bounds the directories one recursive watch arms.
const maxWatchDirs = 10000

// watchFiles watches p (and, when recursive, every directory below it,
// including those created later) with inotify and sends one event line
// per change until the host closes the stream.
func watchFiles(ctx context.Context, logger *log.Logger, conn net.Conn, p string, recursive bool) {
	fi, err := os.Stat(p)
	if err != nil {
		reply(conn, errResponse(err))
		return
	}
	w, err := fsnotify.NewBufferedWatcher(1024)
	if err != nil {
		reply(conn, errResponse(err))
		return
	}
	defer w.Close()
	dirs := 0
	if err := addWatches(w, p, recursive && fi.IsDir(), &dirs, nil); err != nil {
		reply(conn, errResponse(err))
		return
	}
	reply(conn, agent.Response{OK: true})

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		// The host sends nothing more: a read ends when it closes.
		io.Copy(io.Discard, conn)
		cancel()
	}()
	enc := json.NewEncoder(conn)
	send := func(name, op string) bool {
		return enc.Encode(api.FileEvent{Path: name, Op: op, Time: time.Now().UTC()}) == nil
	}
	ops := []struct {
		op   fsnotify.Op
		name string
	}{
		{fsnotify.Create, api.FileOpCreate},
		{fsnotify.Write, api.FileOpWrite},
		{fsnotify.Remove, api.FileOpRemove},
		{fsnotify.Rename, api.FileOpRename},
		{fsnotify.Chmod, api.FileOpChmod},
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			for _, o := range ops {
				if ev.Has(o.op) && !send(ev.Name, o.name) {
					return
				}
			}
			if recursive && ev.Has(fsnotify.Create) {
				if fi, err := os.Lstat(ev.Name); err == nil && fi.IsDir() {
					// What was created in the new directory before its
					// watch was armed is announced as created.
					var found []string
					if err := addWatches(w, ev.Name, true, &dirs, &found); err != nil {
						logger.Printf("watch %s: %v", ev.Name, err)
					}
					for _, f := range found {
						if !send(f, api.FileOpCreate) {
							return
						}
					}
				}
			}
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				if !send(p, api.FileOpOverflow) {
					return
				}
				continue
			}
			logger.Printf("watch %s: %v", p, err)
			return
		}
	}
}

// maxAnnounce bounds the entries announced for one new directory.
const maxAnnounce = 10000

// addWatches watches p and, when recursive, the directories below it
// (symlinks are not followed), counting them in dirs. When found is not
// nil, the paths below p are added to it (at most maxAnnounce).
func addWatches(w *fsnotify.Watcher, p string, recursive bool, dirs *int, found *[]string) error {
	if !recursive {
		return w.Add(p)
	}
	return filepath.WalkDir(p, func(fp string, d fs.DirEntry, err error) error {
		if err != nil {
			if fp != p && errors.Is(err, fs.ErrNotExist) {
				return nil // removed meanwhile
			}
			return err
		}
		if found != nil && fp != p && len(*found) < maxAnnounce {
			*found = append(*found, fp)
		}
		if !d.IsDir() {
			return nil
		}
		if *dirs++; *dirs > maxWatchDirs {
			return badRequest("more than %d directories to watch below %s", maxWatchDirs, p)
		}
		return w.Add(fp)
	})
}
