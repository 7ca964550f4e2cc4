package kube

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// stateVersion is the state file's format. A reader refuses other
// versions rather than guess; the file is a cache, rebuilt on the next sync.
const stateVersion = 1

// stateFile is the state file's JSON: the snapshot's fields inline, with
// a version beside them.
type stateFile struct {
	Version int `json:"version"`
	Snapshot
}

// errEmptyState is ReadState's error for an empty file (a crash between
// create and write on a filesystem without ordered metadata).
var errEmptyState = errors.New("state file: empty")

// ReadState decodes a state file written by a Source. It checks what the
// consumers rely on (names present, addresses valid, ports in range) and
// returns the snapshot sorted, as a Source hands it out.
func ReadState(data []byte) (Snapshot, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return Snapshot{}, errEmptyState
	}
	var f stateFile
	if err := json.Unmarshal(data, &f); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return Snapshot{}, fmt.Errorf("state file: not JSON at byte %d: %w", se.Offset, err)
		}
		return Snapshot{}, fmt.Errorf("state file: %w", err)
	}
	if f.Version != stateVersion {
		return Snapshot{}, fmt.Errorf("state file: version %d, want %d", f.Version, stateVersion)
	}
	s := f.Snapshot
	if err := s.check(); err != nil {
		return Snapshot{}, fmt.Errorf("state file: %w", err)
	}
	s.sort()
	return s, nil
}

// check reports the first thing in s a consumer could trip over.
func (s *Snapshot) check() error {
	seen := make(map[string]bool)
	for i, n := range s.Nodes {
		if n.Name == "" {
			return fmt.Errorf("nodes[%d]: no name", i)
		}
		if seen[n.Name] {
			return fmt.Errorf("nodes[%d] %s: listed twice", i, n.Name)
		}
		seen[n.Name] = true
		for j, a := range n.Addresses {
			if !a.Address.IsValid() {
				return fmt.Errorf("nodes[%d] %s: addresses[%d]: no address", i, n.Name, j)
			}
		}
	}
	clear(seen)
	for i, sl := range s.Slices {
		if sl.Namespace == "" || sl.Name == "" {
			return fmt.Errorf("slices[%d]: no namespace/name", i)
		}
		key := sl.Namespace + "/" + sl.Name
		if seen[key] {
			return fmt.Errorf("slices[%d] %s: listed twice", i, key)
		}
		seen[key] = true
		for j, p := range sl.Ports {
			if p.Port < 1 || p.Port > 65535 {
				return fmt.Errorf("slices[%d] %s: ports[%d]: %d is out of range 1..65535", i, key, j, p.Port)
			}
		}
		for j, ep := range sl.Endpoints {
			for k, a := range ep.Addresses {
				if !a.IsValid() {
					return fmt.Errorf("slices[%d] %s: endpoints[%d]: addresses[%d]: no address", i, key, j, k)
				}
			}
		}
	}
	clear(seen)
	for i, svc := range s.Services {
		if svc.Namespace == "" || svc.Name == "" {
			return fmt.Errorf("services[%d]: no namespace/name", i)
		}
		key := svc.Ref().String()
		if seen[key] {
			return fmt.Errorf("services[%d] %s: listed twice", i, key)
		}
		seen[key] = true
		for j, a := range svc.Addresses {
			if !a.IsValid() {
				return fmt.Errorf("services[%d] %s: addresses[%d]: no address", i, key, j)
			}
		}
		for j, p := range svc.Ports {
			if p.Port < 1 || p.Port > 65535 {
				return fmt.Errorf("services[%d] %s: ports[%d]: %d is out of range 1..65535", i, key, j, p.Port)
			}
		}
	}
	return nil
}

// sort puts nodes in name order and slices in namespace/name order.
func (s *Snapshot) sort() {
	slices.SortFunc(s.Nodes, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(s.Slices, func(a, b Slice) int {
		if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	slices.SortFunc(s.Services, func(a, b Service) int { return strings.Compare(a.Ref().String(), b.Ref().String()) })
}

// marshalState encodes s as a state file.
func marshalState(s Snapshot) ([]byte, error) {
	b, err := json.MarshalIndent(stateFile{Version: stateVersion, Snapshot: s}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("state file: %w", err)
	}
	return append(b, '\n'), nil
}

// writeState replaces path with s atomically: a reader (or a crash) sees
// the old file or the new one, never a part. The directory is created
// when missing; the file is mode 0600 (it lists the cluster's addresses).
func writeState(path string, s Snapshot) error {
	data, err := marshalState(s)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("kubernetes: state file %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("kubernetes: state file %s: %w", path, err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("kubernetes: state file %s: %w", tmp.Name(), err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("kubernetes: state file %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("kubernetes: state file %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("kubernetes: state file %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("kubernetes: state file %s: %w", path, err)
	}
	done = true
	// The rename is durable once the directory is synced; a failure here
	// leaves a complete file either way, so it is not an error.
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// loadState reads the state file at path.
func loadState(path string) (Snapshot, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Snapshot{}, fmt.Errorf("kubernetes: state file %s: %w", path, err)
	}
	s, err := ReadState(data)
	if err != nil {
		return Snapshot{}, fmt.Errorf("kubernetes: %s: %w", path, err)
	}
	return s, nil
}
