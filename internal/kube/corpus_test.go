package kube

import (
	"fmt"
	"strings"
	"testing"

	"github.com/vigil-lb/vigil/internal/badinput"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// TestBrokenKubeCorpus feeds every broken Kubernetes object of the
// bad-input corpus to the conversion into vigil's view: none panics, and
// each keeps only what vigil can use (its "# want: kube" lines say what).
// The allocator's half is internal/lbsvc's TestBrokenKubeCorpus.
func TestBrokenKubeCorpus(t *testing.T) {
	cases, err := badinput.KubeObjects()
	if err != nil {
		t.Fatal(err)
	}
	objects := 0
	for _, c := range cases {
		objs, err := c.Objects()
		if err != nil {
			t.Fatal(err)
		}
		objects += len(objs)
		wants := c.Expectations("kube")
		if len(wants) == 0 {
			continue
		}
		t.Run(c.Name, func(t *testing.T) {
			got := map[string]map[string]string{}
			for _, o := range objs {
				name, facts := converted(t, o)
				got[name] = facts
			}
			for _, w := range wants {
				facts, ok := got[w.Object]
				if !ok {
					t.Fatalf("no object %s in the file", w.Object)
				}
				k, v, _ := strings.Cut(w.Want, "=")
				if facts[k] != v {
					t.Errorf("%s: %s is %q, want %q (all: %v)", w.Object, k, facts[k], v, facts)
				}
			}
		})
	}
	if objects < 20 {
		t.Fatalf("%d broken Kubernetes objects; the corpus promises at least 20", objects)
	}
}

// converted runs o through its conversion and returns its name and what
// the result kept, as strings the corpus's expectations compare with. A
// panic in the conversion fails the test here, naming the object.
func converted(t *testing.T, o runtime.Object) (name string, facts map[string]string) {
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("%s: conversion panicked: %v", name, r)
		}
	}()
	switch o := o.(type) {
	case *corev1.Node:
		name = o.Name
		n := nodeFromAPI(o)
		return name, map[string]string{"addresses": fmt.Sprint(len(n.Addresses)), "ready": fmt.Sprint(n.Ready)}
	case *discoveryv1.EndpointSlice:
		name = o.Namespace + "/" + o.Name
		s, ok := sliceFromAPI(o)
		if !ok {
			return name, map[string]string{"skipped": ""}
		}
		return name, map[string]string{"endpoints": fmt.Sprint(len(s.Endpoints)), "ports": fmt.Sprint(len(s.Ports)), "service": s.Service}
	case *corev1.Service:
		name = o.Namespace + "/" + o.Name
		s, ok := serviceFromAPI(o)
		if !ok {
			return name, map[string]string{"skipped": ""}
		}
		return name, map[string]string{"ports": fmt.Sprint(len(s.Ports)), "addresses": fmt.Sprint(len(s.Addresses))}
	}
	t.Fatalf("%T: no conversion in the corpus test", o)
	return "", nil
}
