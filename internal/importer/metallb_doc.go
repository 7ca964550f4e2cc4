package importer

import (
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
)

// MetalLBFile is one input of MetalLB: a stream of YAML documents as
// kubectl get -o yaml or a manifest gives them.
type MetalLBFile struct {
	Name string
	Src  string
}

// DocumentError is a MetalLB document that cannot be read: which file,
// which document of its stream, which object and which field.
type DocumentError struct {
	File string
	// Doc is the document's position in the file's stream, from 1.
	Doc int
	// Item is the position in a List's items, from 1; 0 outside a List.
	Item int
	// Kind and Name of the object, when known.
	Kind, Name string
	// Field is the key path inside the object, e.g. spec.addresses[1].
	Field string
	Line  int
	Err   error
}

func (e *DocumentError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	fmt.Fprintf(&b, ": document %d", e.Doc)
	if e.Item > 0 {
		fmt.Fprintf(&b, " items[%d]", e.Item-1)
	}
	if e.Kind != "" || e.Name != "" {
		fmt.Fprintf(&b, " (%s/%s)", e.Kind, e.Name)
	}
	if e.Field != "" {
		b.WriteString(": " + e.Field)
	}
	b.WriteString(": " + e.Err.Error())
	return b.String()
}

func (e *DocumentError) Unwrap() error { return e.Err }

// mlObject is one Kubernetes object of the input.
type mlObject struct {
	file       string
	doc, item  int
	apiVersion string
	kind, name string
	namespace  string
	labels     map[string]string
	line       int
	// spec holds the keys of spec, in file order; nil when it has none.
	spec []mlField
	// data and stringData are a Secret's.
	data, stringData map[string]string
	secretType       string
}

// mlField is one key of a mapping and its value.
type mlField struct {
	key  string
	line int
	val  *yaml.Node
}

// ref is how notes name the object: KIND/NAME.
func (o *mlObject) ref() string { return o.kind + "/" + o.name }

func (o *mlObject) errAt(field string, line int, err error) error {
	return &DocumentError{File: o.file, Doc: o.doc, Item: o.item, Kind: o.kind, Name: o.name, Field: field, Line: line, Err: err}
}

// decode reads the value of a spec key into dst, naming the key on error.
func (o *mlObject) decode(f mlField, dst any) error {
	if err := f.val.Decode(dst); err != nil {
		e, line := yamlErr(err, f.line)
		return o.errAt("spec."+f.key, line, e)
	}
	return nil
}

var yamlLinePrefix = regexp.MustCompile(`^yaml: (unmarshal errors:\n\s*)?(line (\d+): )?`)

// yamlErr takes yaml.v3's prefix ("yaml: unmarshal errors: line 7:") off
// err, as the DocumentError gives file, line and field; the line it names,
// if any, replaces line.
func yamlErr(err error, line int) (error, int) {
	m := yamlLinePrefix.FindStringSubmatch(err.Error())
	if m != nil && m[3] != "" {
		line, _ = strconv.Atoi(m[3])
	}
	s := yamlLinePrefix.ReplaceAllString(err.Error(), "")
	return errors.New(strings.Join(strings.Fields(s), " ")), line
}

// readMetalLB splits the files into objects, Lists flattened into their
// items, in input order. Empty documents are skipped.
func readMetalLB(files []MetalLBFile) ([]*mlObject, error) {
	var out []*mlObject
	for _, f := range files {
		dec := yaml.NewDecoder(strings.NewReader(f.Src))
		for doc := 1; ; doc++ {
			var n yaml.Node
			err := dec.Decode(&n)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				e, line := yamlErr(err, 0)
				return nil, &DocumentError{File: f.Name, Doc: doc, Line: line, Err: e}
			}
			root := &n
			if root.Kind == yaml.DocumentNode {
				if len(root.Content) == 0 {
					continue
				}
				root = root.Content[0]
			}
			if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
				continue
			}
			o, err := readObject(f.Name, doc, 0, root)
			if err != nil {
				return nil, err
			}
			if items, ok := listItems(root, o); ok {
				for i, it := range items {
					item, err := readObject(f.Name, doc, i+1, it)
					if err != nil {
						return nil, err
					}
					out = append(out, item)
				}
				continue
			}
			out = append(out, o)
		}
	}
	return out, nil
}

// listItems returns the items of a List (kind List, or IPAddressPoolList
// and the like as the API returns them).
func listItems(root *yaml.Node, o *mlObject) ([]*yaml.Node, bool) {
	if !strings.HasSuffix(o.kind, "List") {
		return nil, false
	}
	items := mapValue(root, "items")
	if items == nil {
		return nil, true
	}
	if items.Kind != yaml.SequenceNode {
		return nil, false
	}
	return items.Content, true
}

// mapValue returns the value of key in mapping n, nil if absent.
func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func readObject(file string, doc, item int, n *yaml.Node) (*mlObject, error) {
	o := &mlObject{file: file, doc: doc, item: item, line: n.Line}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind != yaml.MappingNode {
		return nil, o.errAt("", n.Line, fmt.Errorf("is not a Kubernetes object (a mapping with apiVersion and kind)"))
	}
	var head struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Metadata   struct {
			Name      string            `yaml:"name"`
			Namespace string            `yaml:"namespace"`
			Labels    map[string]string `yaml:"labels"`
		} `yaml:"metadata"`
		Type       string            `yaml:"type"`
		Data       map[string]string `yaml:"data"`
		StringData map[string]string `yaml:"stringData"`
	}
	for _, k := range []string{"apiVersion", "kind", "metadata"} {
		if v := mapValue(n, k); v != nil {
			var dst any
			switch k {
			case "metadata":
				dst = &head.Metadata
			case "kind":
				dst = &head.Kind
			default:
				dst = &head.APIVersion
			}
			if err := v.Decode(dst); err != nil {
				e, line := yamlErr(err, v.Line)
				return nil, o.errAt(k, line, e)
			}
		}
	}
	o.apiVersion, o.kind, o.name, o.namespace, o.labels = head.APIVersion, head.Kind, head.Metadata.Name, head.Metadata.Namespace, head.Metadata.Labels
	if o.kind == "" {
		return nil, o.errAt("kind", n.Line, fmt.Errorf("is missing"))
	}
	if o.kind == "Secret" {
		// Only a Secret a BGPPeer's passwordSecret names is read; a
		// malformed other one is no business of the import.
		if err := n.Decode(&head); err == nil {
			o.secretType, o.data, o.stringData = head.Type, head.Data, head.StringData
		}
	}
	spec := mapValue(n, "spec")
	if spec != nil && spec.Kind == yaml.AliasNode {
		spec = spec.Alias
	}
	switch {
	case spec == nil || spec.Kind == yaml.ScalarNode && spec.Tag == "!!null":
	case spec.Kind != yaml.MappingNode:
		if isMetalLB(o) {
			return nil, o.errAt("spec", spec.Line, fmt.Errorf("is not a mapping"))
		}
	default:
		for i := 0; i+1 < len(spec.Content); i += 2 {
			k := spec.Content[i]
			o.spec = append(o.spec, mlField{key: k.Value, line: k.Line, val: spec.Content[i+1]})
		}
	}
	if isMetalLB(o) && o.name == "" && !strings.HasSuffix(o.kind, "List") {
		return nil, o.errAt("metadata.name", n.Line, fmt.Errorf("is missing"))
	}
	return o, nil
}

// isMetalLB reports whether o is of MetalLB's API group.
func isMetalLB(o *mlObject) bool {
	return strings.HasPrefix(o.apiVersion, "metallb.io/")
}

// mlSelector is a Kubernetes LabelSelector as MetalLB's CRDs carry it.
type mlSelector struct {
	MatchLabels      map[string]string `yaml:"matchLabels"`
	MatchExpressions []struct {
		Key      string   `yaml:"key"`
		Operator string   `yaml:"operator"`
		Values   []string `yaml:"values"`
	} `yaml:"matchExpressions"`
}

// selector converts s into a labels.Selector; {} selects everything.
func (s mlSelector) selector() (labels.Selector, error) {
	ls := &metav1.LabelSelector{MatchLabels: s.MatchLabels}
	for _, e := range s.MatchExpressions {
		ls.MatchExpressions = append(ls.MatchExpressions, metav1.LabelSelectorRequirement{
			Key: e.Key, Operator: metav1.LabelSelectorOperator(e.Operator), Values: e.Values})
	}
	return metav1.LabelSelectorAsSelector(ls)
}

// selectors decodes a spec key holding a list of LabelSelectors.
func (o *mlObject) selectors(f mlField) ([]labels.Selector, error) {
	var raw []mlSelector
	if err := o.decode(f, &raw); err != nil {
		return nil, err
	}
	out := make([]labels.Selector, 0, len(raw))
	for i, r := range raw {
		s, err := r.selector()
		if err != nil {
			line := f.line
			if i < len(f.val.Content) {
				line = f.val.Content[i].Line
			}
			return nil, o.errAt(fmt.Sprintf("spec.%s[%d]", f.key, i), line, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// anyOf writes "matches one of sels" as one vigil selector. nil means no
// restriction; so does any selector that matches everything. Several
// selectors can only be written as one when each is key=value or key in
// (...) on the same key; otherwise exact is false and the first is
// returned (fewer nodes rather than nodes MetalLB would not use).
func anyOf(sels []labels.Selector) (sel string, exact bool) {
	seen := map[string]bool{}
	var distinct []labels.Selector
	for _, s := range sels {
		if s.Empty() {
			return "", true
		}
		if !seen[s.String()] {
			seen[s.String()] = true
			distinct = append(distinct, s)
		}
	}
	switch len(distinct) {
	case 0:
		return "", true
	case 1:
		return distinct[0].String(), true
	}
	key := ""
	var values []string
	for _, s := range distinct {
		reqs, _ := s.Requirements()
		if len(reqs) != 1 {
			return distinct[0].String(), false
		}
		r := reqs[0]
		switch r.Operator() {
		case selection.Equals, selection.DoubleEquals, selection.In:
		default:
			return distinct[0].String(), false
		}
		if key != "" && r.Key() != key {
			return distinct[0].String(), false
		}
		key = r.Key()
		values = append(values, r.Values().List()...)
	}
	r, err := labels.NewRequirement(key, selection.In, values)
	if err != nil {
		return distinct[0].String(), false
	}
	return labels.NewSelector().Add(*r).String(), true
}
