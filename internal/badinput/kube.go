package badinput

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
)

// Objects decodes c's documents into typed Kubernetes objects (Node,
// EndpointSlice, Service ...), as a watch would deliver them.
func (c Case) Objects() ([]runtime.Object, error) {
	var out []runtime.Object
	for i, d := range c.Documents() {
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(d, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", c.Name, i+1, err)
		}
		out = append(out, obj)
	}
	return out, nil
}
