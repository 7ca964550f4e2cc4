package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// manCmd writes the man pages of every command, generated from the same
// cobra tree as --help, so they cannot drift from it. make man runs it;
// it is hidden from the command list as a build step, not an operator's
// tool.
func manCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "man DIR",
		Short:  "Write the man pages (section 8) of vigil and its commands into DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("man: %w", err)
			}
			h := &doc.GenManHeader{Title: "VIGIL", Section: "8", Source: "vigil " + version(), Manual: "vigil manual"}
			// The build date, not today's: the same build writes the same pages.
			if t := buildTime(); !t.IsZero() {
				h.Date = &t
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true
			if err := doc.GenManTree(root, h, dir); err != nil {
				return fmt.Errorf("man: %w", err)
			}
			return nil
		},
	}
}
