package config

import (
	"bytes"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Marshal writes c as YAML that Parse reads back to the same model: the one
// encoder of the schema, used by vigil import and by anything else that
// writes a config.
//
// It writes only what is set, so the file stays as short as one written by
// hand. A zero value is left out, and Parse then treats it as unset and
// gives it its default, as validation does for a Config built in memory.
// Two kinds of zero are kept because they differ from unset: a non-nil
// pointer (preempt: false, garp count 0, a balancer's check: {}), and a
// scalar key that the file c was parsed from set explicitly (api.http: ""
// turns the endpoint off, drain_timeout: 0s closes at once). Empty lists are
// left out: nil and empty read the same. The field order is the
// struct's; lists and mappings whose tag says flow are written [a, b] and
// {k: v}. Fields tagged "-" (those validation fills in) are not written.
func Marshal(c *Config) ([]byte, error) {
	e := &encoder{explicit: c.lines.byPath}
	root := e.value("", reflect.ValueOf(c).Elem())
	if e.err != nil {
		return nil, fmt.Errorf("config: encode: %w", e.err)
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, fmt.Errorf("config: encode: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("config: encode: %w", err)
	}
	return b.Bytes(), nil
}

// encoder builds the YAML node tree of a Config by its yaml tags. yaml.v3
// encodes the scalars (durations as 1m30s, quoting where a plain string
// would read as another type), as it would in a struct.
type encoder struct {
	// explicit holds the key paths of the file the Config was parsed from.
	explicit map[string]int
	// err is the first scalar that did not encode; the walk goes on and
	// Marshal returns it.
	err error
}

// value returns the node of v at key path p, nil for a nil pointer.
func (e *encoder) value(p string, v reflect.Value) *yaml.Node {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return nil
		}
		return e.value(p, v.Elem())
	case reflect.Struct:
		m := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		e.fields(m, p, v)
		return m
	case reflect.Slice:
		s := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		for i := range v.Len() {
			n := e.value(fmt.Sprintf("%s[%d]", p, i), v.Index(i))
			if n == nil {
				n = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}
			}
			s.Content = append(s.Content, n)
		}
		return s
	}
	var n yaml.Node
	if err := n.Encode(v.Interface()); err != nil && e.err == nil {
		e.err = fmt.Errorf("%s: %w", p, err)
	}
	return &n
}

// fields appends the keys of struct v at path p to mapping m.
func (e *encoder) fields(m *yaml.Node, p string, v reflect.Value) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		flags := strings.Split(opts, ",")
		fv := v.Field(i)
		if slices.Contains(flags, "inline") {
			e.fields(m, p, fv) // Timing: its keys sit beside the parent's
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name) // yaml.v3's default key
		}
		fp := name
		if p != "" {
			fp = p + "." + name
		}
		n := e.value(fp, fv)
		if n == nil || e.empty(fp, fv, n) {
			continue
		}
		if slices.Contains(flags, "flow") {
			n.Style |= yaml.FlowStyle
		}
		m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: name}, n)
	}
}

// empty reports whether field v at path p, encoded as n, can be left out:
// an empty list, a mapping with no key left, or a zero scalar the parsed
// file did not set (validation defaults only unset scalars; an empty list
// or mapping reads the same whether written or not). Non-nil pointers are
// never empty.
func (e *encoder) empty(p string, v reflect.Value, n *yaml.Node) bool {
	switch v.Kind() {
	case reflect.Pointer:
		return false
	case reflect.Struct:
		return len(n.Content) == 0
	case reflect.Slice:
		return v.Len() == 0
	}
	return v.IsZero() && e.explicit[p] == 0
}
