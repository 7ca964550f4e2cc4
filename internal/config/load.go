package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
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
	// onLine lists, per line, every key and sequence element on it in file
	// order: a flow mapping ({http: {path: /}, interval: 1}) puts several
	// on one line, and yaml.v3's messages name only the line.
	onLine map[int][]located
}

// located is a key (or a sequence element, key nil) and its value.
type located struct {
	path     string
	key, val *yaml.Node
}

// Line returns the line of a key path, 0 if it is not in the file.
func (c *Config) Line(path string) int { return c.lines.byPath[path] }

// Load reads and validates a config file.
func Load(path string) (*Config, error) {
	data, err := readLimited(path)
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
	// Size, text, one document and the limits come first: a huge or hostile
	// file fails before it is decoded into a Config.
	if es := checkText(data); es != nil {
		return nil, es
	}
	root, es := oneDocument(data)
	if es == nil {
		es = checkLimits(&root)
	}
	if len(es) > 0 {
		return nil, es
	}
	info := lineInfo{byPath: map[string]int{}, byLine: map[int]string{}, onLine: map[int][]located{}}
	if len(root.Content) > 0 {
		index(root.Content[0], "", info)
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	// Unknown keys and values of the wrong type do not stop the decoder:
	// it fills in everything else and lists them all in one TypeError.
	// Any other error (none is known) means nothing was decoded.
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, Errors{yamlError(err, info, nil)}
		}
		used := map[string]bool{}
		for _, m := range te.Errors {
			es = append(es, yamlError(errors.New(m), info, used))
		}
	}
	c.lines = info
	// Validate what did decode, so that one run shows every problem. A
	// value that did not decode is left zero, and what validation says
	// about it, or about the keys beside it that are checked against it
	// (a check's timeout against its interval), would be wrong: those
	// wait for the next run. An unknown key leaves nothing out.
	var quiet []string
	for _, e := range es {
		if !strings.HasPrefix(e.Msg, "unknown key ") {
			quiet = append(quiet, parent(e.Path))
		}
	}
	for _, e := range c.validate() {
		if !slices.ContainsFunc(quiet, func(q string) bool { return within(e.Path, q) }) {
			es = append(es, e)
		}
	}
	if len(es) > 0 {
		sort.SliceStable(es, func(i, j int) bool { return es[i].Line < es[j].Line })
		return nil, es
	}
	return &c, nil
}

// parent is the path of the mapping or list that holds path; a top-level
// key is its own (quieting the whole file for one bad key would hide too
// much), and an unknown path stays unknown ("": everything).
func parent(path string) string {
	if i := strings.LastIndexAny(path, ".["); i > 0 {
		return path[:i]
	}
	return path
}

// within reports whether path is base or under it; everything is under "".
func within(path, base string) bool {
	if !strings.HasPrefix(path, base) {
		return false
	}
	rest := path[len(base):]
	return base == "" || rest == "" || rest[0] == '.' || rest[0] == '['
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
			info.onLine[k.Line] = append(info.onLine[k.Line], located{p, k, v})
			index(v, p, info)
		}
	case yaml.SequenceNode:
		for i, e := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			info.byPath[p] = e.Line
			if _, ok := info.byLine[e.Line]; !ok {
				info.byLine[e.Line] = p
			}
			info.onLine[e.Line] = append(info.onLine[e.Line], located{p, nil, e})
			index(e, p, info)
		}
	}
}

var (
	lineRE     = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	unknownRE  = regexp.MustCompile("^field (\\S+) not found in type")
	typeRE     = regexp.MustCompile("^cannot unmarshal !!(\\w+) `(.*)` into (\\S+)$")
	typeKindRE = regexp.MustCompile("^cannot unmarshal !!(map|seq) into \\S+$")
)

// yamlError turns a yaml.v3 message into an Error with the key path of its
// line. yaml.v3 gives the line but not the column, so on a line with
// several keys the message's key name (unknown key) or value and tag (type
// error) picks the one meant; used holds the paths earlier messages took,
// so that two alike on one line get one each. used may be nil.
func yamlError(err error, info lineInfo, used map[string]bool) Error {
	msg := err.Error()
	m := lineRE.FindStringSubmatch(msg)
	if m == nil {
		return Error{Msg: strings.TrimPrefix(msg, "yaml: ")}
	}
	line, _ := strconv.Atoi(m[1])
	e := Error{Line: line, Path: info.byLine[line], Msg: m[2]}
	var match func(located) bool
	if u := unknownRE.FindStringSubmatch(m[2]); u != nil {
		e.Msg = "unknown key " + strconv.Quote(u[1])
		match = func(l located) bool { return l.key != nil && l.key.Value == u[1] }
	} else if t := typeRE.FindStringSubmatch(m[2]); t != nil {
		e.Msg = fmt.Sprintf("%q is not %s", t[2], describeType(t[3]))
		match = func(l located) bool {
			return l.val.Kind == yaml.ScalarNode && l.val.ShortTag() == "!!"+t[1] && shortValue(l.val.Value) == t[2]
		}
	} else if t := typeKindRE.FindStringSubmatch(m[2]); t != nil {
		kind := map[string]yaml.Kind{"map": yaml.MappingNode, "seq": yaml.SequenceNode}[t[1]]
		match = func(l located) bool { return l.val.Kind == kind }
	}
	if match != nil {
		for _, l := range info.onLine[line] {
			if match(l) && !used[l.path] {
				e.Path = l.path
				break
			}
		}
		if used != nil {
			used[e.Path] = true
		}
	}
	return e
}

// shortValue is a scalar as yaml.v3 quotes it in a type error.
func shortValue(v string) string {
	if len(v) > 10 {
		return v[:7] + "..."
	}
	return v
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
