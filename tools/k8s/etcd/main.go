// Command etcd is the upstream etcd server, the API server's store in
// vigil's tests (Debian's etcd 3.4 is too old for kube-apiserver 1.37).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
