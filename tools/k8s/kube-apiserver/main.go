// Command kube-apiserver is the upstream API server, built here so that
// vigil's tests run against a real one (there is no Debian package).
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
