package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// Set by the Makefile's build target (and the Dockerfile) with -ldflags
// "-X main.buildVersion=v1.2.3 -X main.buildCommit=SHA -X main.buildDate=RFC3339".
var buildVersion, buildCommit, buildDate = "", "", ""

// buildInfo is what vigil version prints: the version, the commit it was
// built from and when.
type buildInfo struct {
	Version string
	Commit  string // "unknown" when neither ldflags nor the Go build info name it
	Date    string // RFC 3339, "unknown" likewise
	Go      string
}

// readBuildInfo takes the ldflags' values first; a plain go build or go
// install leaves them empty, and then the Go toolchain's own record
// (module version, vcs.revision and vcs.time when built with -buildvcs)
// fills what it can.
func readBuildInfo() buildInfo {
	b := buildInfo{Version: buildVersion, Commit: buildCommit, Date: buildDate, Go: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		fromBuildInfo(&b, bi)
	}
	if b.Version == "" {
		b.Version = "dev"
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	}
	if b.Date == "" {
		b.Date = "unknown"
	}
	return b
}

// fromBuildInfo fills b's empty fields from the Go build info.
func fromBuildInfo(b *buildInfo, bi *debug.BuildInfo) {
	if b.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		b.Version = bi.Main.Version
	}
	var modified bool
	var commit, date string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			commit = s.Value
		case "vcs.time":
			date = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if b.Commit == "" && commit != "" {
		b.Commit = commit
		if modified {
			b.Commit += "-dirty"
		}
	}
	if b.Date == "" && date != "" {
		b.Date = date + " (commit date)" // the toolchain records no build time
	}
}

func version() string { return readBuildInfo().Version }

// buildTime is the build date as a time, for the man pages' header; the
// zero time when it is unknown.
func buildTime() time.Time {
	d, _, _ := strings.Cut(readBuildInfo().Date, " ")
	t, _ := time.Parse(time.RFC3339, d)
	return t
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, the commit and the build date",
		Run: func(cmd *cobra.Command, _ []string) {
			b := readBuildInfo()
			fmt.Fprintf(cmd.OutOrStdout(), "vigil %s\ncommit %s\nbuilt %s\n%s\n", b.Version, b.Commit, b.Date, b.Go)
		},
	}
}
