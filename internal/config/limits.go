package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Limits on a config file. They are far above any real config (a balancer
// of a thousand backends is ~50 KiB) and are checked before the file is
// decoded into a Config or validated, so that a huge or hostile file fails
// fast, in little memory, with a line number: a 50 MB file took 13 s and
// 3.2 GB in vigil check without them. docs/config.md lists them.
const (
	MaxFileSize  = 2 << 20 // bytes
	MaxDepth     = 32      // mappings and lists nested in one another
	MaxKeyLen    = 128     // bytes in one key
	MaxListLen   = 10000   // items in any one list: a balancer's backends, checks, VIPs ...
	MaxInstances = 1024    // vrrp.instances
	MaxPools     = 256     // vrrp.pools
	MaxBalancers = 1024    // balancers
)

// listLimits are the lists with a limit of their own, below MaxListLen.
var listLimits = map[string]int{"vrrp.instances": MaxInstances, "vrrp.pools": MaxPools, "balancers": MaxBalancers}

// readLimited reads a file, but no more than one byte over MaxFileSize:
// enough for checkText to refuse it without holding all of a huge file.
func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, MaxFileSize+1))
}

// checkText refuses a file over MaxFileSize and one that is not text: a
// byte that is not UTF-8, or a control character YAML does not allow,
// named with its line and column (yaml.v3 names neither).
func checkText(data []byte) Errors {
	if len(data) > MaxFileSize {
		return Errors{{Msg: fmt.Sprintf("the file is over %d bytes (%d MiB), the limit", MaxFileSize, MaxFileSize>>20)}}
	}
	line, col := 1, 1
	for i := 0; i < len(data); {
		r, n := utf8.DecodeRune(data[i:])
		var what string
		switch {
		case r == utf8.RuneError && n == 1:
			what = fmt.Sprintf("byte 0x%02x is not UTF-8", data[i])
		case r < 0x20 && r != '\t' && r != '\n' && r != '\r', r == 0x7f, r >= 0x80 && r <= 0x9f && r != 0x85:
			what = fmt.Sprintf("control character %U is not allowed in YAML", r)
		}
		if what != "" {
			return Errors{{Line: line, Msg: fmt.Sprintf("column %d: %s; a config is UTF-8 text (is this a binary file?)", col, what)}}
		}
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
		i += n
	}
	return nil
}

// oneDocument parses the file's only YAML document. A second one (after
// "---") is an error at its line: yaml.Unmarshal read the first and
// silently ignored the rest.
func oneDocument(data []byte) (yaml.Node, Errors) {
	var root, next yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil && !errors.Is(err, io.EOF) {
		return root, Errors{yamlError(err, lineInfo{}, nil)}
	}
	switch err := dec.Decode(&next); {
	case err == nil:
		return root, Errors{{Line: next.Line, Msg: "a second YAML document starts here: vigil reads one document per file; merge it into the first or remove it"}}
	case !errors.Is(err, io.EOF):
		return root, Errors{yamlError(err, lineInfo{}, nil)}
	}
	return root, nil
}

// checkLimits walks the parsed document for keys over MaxKeyLen, nesting
// deeper than MaxDepth and lists over their limit, each at its line. It
// does not follow aliases: the decoder bounds their expansion.
func checkLimits(root *yaml.Node) Errors {
	var es Errors
	var walk func(n *yaml.Node, path string, depth int)
	walk = func(n *yaml.Node, path string, depth int) {
		if (n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode) && depth > MaxDepth {
			es = append(es, Error{Path: path, Line: n.Line, Msg: fmt.Sprintf("nested deeper than %d levels", MaxDepth)})
			return
		}
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path, depth)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i]
				if len(k.Value) > MaxKeyLen {
					es = append(es, Error{Path: path, Line: k.Line, Msg: fmt.Sprintf("a key of %d bytes; the limit is %d", len(k.Value), MaxKeyLen)})
					continue
				}
				p := k.Value
				if path != "" {
					p = path + "." + k.Value
				}
				walk(n.Content[i+1], p, depth+1)
			}
		case yaml.SequenceNode:
			limit, named := listLimits[path]
			if !named {
				limit = MaxListLen
			}
			if len(n.Content) > limit {
				es = append(es, Error{Path: path, Line: n.Line, Msg: fmt.Sprintf("%d items; the limit is %d", len(n.Content), limit)})
				return
			}
			for i, c := range n.Content {
				walk(c, fmt.Sprintf("%s[%d]", path, i), depth+1)
			}
		}
	}
	walk(root, "", 0)
	return es
}
