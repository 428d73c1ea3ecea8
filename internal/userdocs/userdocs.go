// Package userdocs reads the documentation a user of the repository reads
// (README.md, docs/*.md and each component's README.md), for the tests that
// hold it to the code: its configuration blocks validate, and it names no
// file or document the repository does not have.
package userdocs

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// patterns are the user docs, relative to the repository's root.
var patterns = []string{"README.md", "docs/*.md", "extension/*/README.md", "receiver/*/README.md"}

// Root is the repository's root: the nearest directory above the working
// directory that holds go.mod.
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Files are the user docs under root, as slash-separated paths relative to
// it, sorted.
func Files(root string) ([]string, error) {
	var files []string
	for _, p := range patterns {
		matches, err := filepath.Glob(filepath.Join(root, filepath.FromSlash(p)))
		if err != nil {
			return nil, err
		}
		for _, m := range matches {
			rel, err := filepath.Rel(root, m)
			if err != nil {
				return nil, err
			}
			files = append(files, filepath.ToSlash(rel))
		}
	}
	slices.Sort(files)
	return files, nil
}

// Block is a fenced code block of a Markdown text.
type Block struct {
	Lang string // the first word of the info string: "yaml", "sh", or ""
	Line int    // the line of the opening fence, from 1
	Text string // the lines between the fences
}

// Blocks are the fenced code blocks of a Markdown text, in order, and the
// text with each of them replaced by empty lines (so that line numbers
// hold): the prose. A block left open runs to the end of the text.
func Blocks(markdown string) (blocks []Block, prose string) {
	lines := strings.Split(markdown, "\n")
	var out []string
	var open *Block
	var fence string
	var body []string
	for i, line := range lines {
		trimmed := strings.TrimLeft(line, " ")
		if open == nil {
			if n := len(trimmed) - len(strings.TrimLeft(trimmed, "`")); n >= 3 && len(line)-len(trimmed) <= 3 {
				fence = trimmed[:n]
				lang, _, _ := strings.Cut(strings.TrimSpace(trimmed[n:]), " ")
				open, body = &Block{Lang: lang, Line: i + 1}, nil
				out = append(out, "")
				continue
			}
			out = append(out, line)
			continue
		}
		out = append(out, "")
		if strings.HasPrefix(trimmed, fence) && strings.TrimSpace(strings.TrimLeft(trimmed, "`")) == "" {
			open.Text = strings.Join(body, "\n") + "\n"
			blocks = append(blocks, *open)
			open = nil
			continue
		}
		body = append(body, line)
	}
	if open != nil {
		open.Text = strings.Join(body, "\n")
		blocks = append(blocks, *open)
	}
	return blocks, strings.Join(out, "\n")
}
