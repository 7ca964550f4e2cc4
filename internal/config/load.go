package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Error is one problem in a config file, located by key path and line.
type Error struct {
	Path string // e.g. vrrp.instances[0].priority
	Line int    // 0 when unknown
	Msg  string
}

func (e Error) Error() string {
	s := e.Msg
	if e.Path != "" {
		s = e.Path + ": " + s
	}
	if e.Line > 0 {
		s += fmt.Sprintf(" (line %d)", e.Line)
	}
	return s
}

// Errors is every problem found, in file order.
type Errors []Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// lineInfo maps key paths to the line they stand on, and lines back to paths.
type lineInfo struct {
	byPath map[string]int
	byLine map[int]string
}

// Line returns the line of a key path, 0 if it is not in the file.
func (c *Config) Line(path string) int { return c.lines.byPath[path] }

// Load reads and validates a config file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config %s:\n%w", path, err)
	}
	return c, nil
}

// Parse decodes YAML, applies defaults and validates. The error, if any, is
// Errors listing every problem.
func Parse(data []byte) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, Errors{yamlError(err, lineInfo{})}
	}
	info := lineInfo{byPath: map[string]int{}, byLine: map[int]string{}}
	if len(root.Content) > 0 {
		index(root.Content[0], "", info)
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			var es Errors
			for _, m := range te.Errors {
				es = append(es, yamlError(errors.New(m), info))
			}
			return nil, es
		}
		return nil, Errors{yamlError(err, info)}
	}
	c.lines = info
	if es := c.validate(); len(es) > 0 {
		sort.SliceStable(es, func(i, j int) bool { return es[i].Line < es[j].Line })
		return nil, es
	}
	return &c, nil
}

// index records the line of every key and sequence element under path.
func index(n *yaml.Node, path string, info lineInfo) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			info.byPath[p] = k.Line
			if _, ok := info.byLine[k.Line]; !ok || len(p) > len(info.byLine[k.Line]) {
				info.byLine[k.Line] = p
			}
			index(v, p, info)
		}
	case yaml.SequenceNode:
		for i, e := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			info.byPath[p] = e.Line
			if _, ok := info.byLine[e.Line]; !ok {
				info.byLine[e.Line] = p
			}
			index(e, p, info)
		}
	}
}

var (
	lineRE    = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	unknownRE = regexp.MustCompile("^field (\\S+) not found in type")
	typeRE    = regexp.MustCompile("^cannot unmarshal !!(\\w+) `(.*)` into (\\S+)$")
)

// yamlError turns a yaml.v3 message into an Error with the key path of its line.
func yamlError(err error, info lineInfo) Error {
	msg := err.Error()
	m := lineRE.FindStringSubmatch(msg)
	if m == nil {
		return Error{Msg: strings.TrimPrefix(msg, "yaml: ")}
	}
	line, _ := strconv.Atoi(m[1])
	e := Error{Line: line, Path: info.byLine[line], Msg: m[2]}
	if u := unknownRE.FindStringSubmatch(m[2]); u != nil {
		e.Msg = "unknown key " + strconv.Quote(u[1])
		// Several keys can share a line ({a: 1, b: 2}): name the right one.
		for path, l := range info.byPath {
			if l == line && strings.HasSuffix(path, "."+u[1]) && (e.Path == "" || !strings.HasSuffix(e.Path, "."+u[1])) {
				e.Path = path
			}
		}
	} else if t := typeRE.FindStringSubmatch(m[2]); t != nil {
		e.Msg = fmt.Sprintf("%q is not %s", t[2], describeType(t[3]))
	}
	return e
}

func describeType(goType string) string {
	switch {
	case goType == "time.Duration" || goType == "*time.Duration":
		return "a duration with a unit, like 1s or 100ms"
	case strings.Contains(goType, "int"):
		return "a whole number"
	case strings.Contains(goType, "bool"):
		return "true or false"
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case strings.HasPrefix(goType, "config."):
		return "a mapping of keys"
	}
	return "of type " + goType
}
