package export

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Store is where an export's objects go: a local directory or a bucket.
type Store interface {
	// Create starts an object; nothing is visible at key until Commit.
	Create(ctx context.Context, key string) (Object, error)
	// Put writes a small object whole (the manifest), replacing any old one.
	Put(ctx context.Context, key string, data []byte) error
}

// Object is an object being written, streamed: an S3 store uploads parts as
// they fill.
type Object interface {
	io.Writer
	// Commit completes the object (CompleteMultipartUpload, rename into
	// place).
	Commit(ctx context.Context) error
	// Abort discards it.
	Abort(ctx context.Context) error
}

// DirStore returns a Store writing under dir. An object is written to a
// temporary file next to its final name (".<name>.tmp-*"), which Commit
// fsyncs and renames into place, fsyncing the directory too; Put does the
// same with its data, so a reader never sees a partial object. Keys use '/'
// as separator and must stay inside dir.
func DirStore(dir string) Store { return dirStore{dir: dir} }

type dirStore struct{ dir string }

func (s dirStore) path(key string) (string, error) {
	clean := path.Clean("/" + key)
	if key == "" || strings.HasSuffix(key, "/") || clean == "/" {
		return "", fmt.Errorf("export: invalid object key %q", key)
	}
	if clean != "/"+key {
		return "", fmt.Errorf("export: object key %q is not a clean relative path", key)
	}
	return filepath.Join(s.dir, filepath.FromSlash(clean[1:])), nil
}

func (s dirStore) create(key string) (*fileObject, error) {
	p, err := s.path(key)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("export: create %s: %w", p, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(p)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("export: create %s: %w", p, err)
	}
	return &fileObject{f: f, final: p}, nil
}

func (s dirStore) Create(_ context.Context, key string) (Object, error) {
	o, err := s.create(key)
	if err != nil {
		return nil, err
	}
	return o, nil
}

func (s dirStore) Put(ctx context.Context, key string, data []byte) error {
	o, err := s.create(key)
	if err != nil {
		return err
	}
	if _, err := o.Write(data); err != nil {
		_ = o.Abort(ctx)
		return err
	}
	return o.Commit(ctx)
}

// fileObject is a DirStore object: a temporary file renamed on Commit.
type fileObject struct {
	f     *os.File
	final string
	done  bool
}

func (o *fileObject) Write(p []byte) (int, error) {
	if o.done {
		return 0, fmt.Errorf("export: write to %s after commit or abort", o.final)
	}
	n, err := o.f.Write(p)
	if err != nil {
		err = fmt.Errorf("export: write %s: %w", o.final, err)
	}
	return n, err
}

func (o *fileObject) Commit(context.Context) error {
	if o.done {
		return fmt.Errorf("export: commit %s: already committed or aborted", o.final)
	}
	o.done = true
	tmp := o.f.Name()
	err := o.f.Sync()
	if cerr := o.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, o.final)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("export: commit %s: %w", o.final, err)
	}
	if err := syncDir(filepath.Dir(o.final)); err != nil {
		return fmt.Errorf("export: commit %s: sync directory: %w", o.final, err)
	}
	return nil
}

func (o *fileObject) Abort(context.Context) error {
	if o.done {
		return nil
	}
	o.done = true
	tmp := o.f.Name()
	err := o.f.Close()
	if rerr := os.Remove(tmp); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("export: abort %s: %w", o.final, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	// Some file systems (and Windows) cannot fsync a directory.
	if errors.Is(err, os.ErrInvalid) || errors.Is(err, os.ErrPermission) {
		return nil
	}
	return err
}
