package userdocs

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	url = regexp.MustCompile(`https?://[^\s)>\]"'` + "`" + `]+`)
	// link is the target of a Markdown link or image: [text](target "title").
	link = regexp.MustCompile(`\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
	// document is a word that names a Markdown file.
	document = regexp.MustCompile(`[\w./-]*\w\.md\b`)
	// elsewhere are the words of documents a user does not have: the
	// documents this work was planned in and its issue tracker.
	elsewhere = regexp.MustCompile(`(?i)\b(seed (?:document|scenario)|seed's|the seed\b|the issue\b|issues? #?\d+|the brief\b)`)
	heading   = regexp.MustCompile(`(?m)^#{1,6}\s+(.+?)\s*#*\s*$`)
)

// The docs a user reads name no file or document outside the repository:
//   - every relative link's file exists, and its #anchor is a heading of it;
//   - every word that starts with one of the repository's top-level
//     directories (`examples/statefulset`, `internal/leader`, e2e/...) is a
//     path that exists (bin/ and build/ are make's and not checked);
//   - every word that names a Markdown file (DESIGN.md) names one of the
//     repository, next to the doc or from the root;
//   - no words point at the planning documents or the issue tracker ("the
//     seed document", "the issue", "issue 6").
//
// URLs are left alone: a user can follow them. The same rules, but for
// links, hold for the comments of examples/, which users read as docs.
func TestDocsNameNothingOutsideTheRepository(t *testing.T) {
	root, err := Root()
	require.NoError(t, err)
	docs, err := Files(root)
	require.NoError(t, err)
	require.Contains(t, docs, "README.md")
	require.Contains(t, docs, "docs/kubernetes.md")
	require.NoError(t, filepath.WalkDir(filepath.Join(root, "examples"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			docs = append(docs, filepath.ToSlash(rel))
		}
		return err
	}))

	entries, err := os.ReadDir(root)
	require.NoError(t, err)
	var dirs []string
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") && e.Name() != "bin" && e.Name() != "build" {
			dirs = append(dirs, regexp.QuoteMeta(e.Name()))
		}
	}
	repoPath := regexp.MustCompile(`(?:^|[^\w./-])((?:` + strings.Join(dirs, "|") + `)/[\w./-]*)`)
	var links, paths int // checked, so that a broken pattern cannot pass silently

	for _, doc := range docs {
		raw, err := os.ReadFile(filepath.Join(root, doc))
		require.NoError(t, err)
		text := url.ReplaceAllStringFunc(string(raw), func(u string) string { return strings.Repeat(" ", len(u)) })
		lineOf := func(offset int) string { return fmt.Sprintf("%s:%d", doc, strings.Count(text[:offset], "\n")+1) }
		exists := func(p string) bool {
			for _, base := range []string{path.Dir(doc), "."} {
				if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(path.Join(base, p)))); err == nil {
					return true
				}
			}
			return false
		}

		if strings.HasSuffix(doc, ".md") {
			_, prose := Blocks(string(raw))
			for _, m := range link.FindAllStringSubmatchIndex(prose, -1) {
				target := prose[m[2]:m[3]]
				if strings.HasPrefix(target, "http://") || strings.HasPrefix(target, "https://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				file, anchor, _ := strings.Cut(target, "#")
				if file == "" {
					file = path.Base(doc)
				}
				p := path.Join(path.Dir(doc), file)
				links++
				if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(p))); err != nil || strings.HasPrefix(p, "../") {
					t.Errorf("%s: the link %s names %s, which the repository does not have", lineOf(m[2]), target, p)
					continue
				}
				if anchor != "" && strings.HasSuffix(p, ".md") {
					target, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(p)))
					require.NoError(t, err)
					if !anchors(string(target))[anchor] {
						t.Errorf("%s: the link %s names a heading %s does not have", lineOf(m[2]), prose[m[2]:m[3]], p)
					}
				}
			}
		}
		for _, m := range repoPath.FindAllStringSubmatchIndex(text, -1) {
			p := strings.TrimRight(text[m[2]:m[3]], ".,:;")
			paths++
			if p != "" && !exists(p) {
				t.Errorf("%s: %s is not a path of the repository", lineOf(m[2]), p)
			}
		}
		for _, m := range document.FindAllStringIndex(text, -1) {
			if name := text[m[0]:m[1]]; !exists(name) {
				t.Errorf("%s: %s is no document of the repository", lineOf(m[0]), name)
			}
		}
		for _, m := range elsewhere.FindAllStringIndex(text, -1) {
			if strings.HasPrefix(strings.ToLower(text[m[1]:]), " corp") {
				continue // Go fuzzing's seed corpus
			}
			t.Errorf("%s: %q points at a document a user does not have", lineOf(m[0]), text[m[0]:m[1]])
		}
	}
	assert.Greater(t, links, 10, "relative links checked")
	assert.Greater(t, paths, 50, "repository paths checked")
}

// anchors are the #fragments GitHub gives a Markdown text's headings:
// lower case, without punctuation, spaces as hyphens, "-1", "-2" on repeats.
func anchors(markdown string) map[string]bool {
	_, prose := Blocks(markdown)
	keep := regexp.MustCompile(`[^\p{L}\p{N}_ -]`)
	seen := map[string]bool{}
	for _, m := range heading.FindAllStringSubmatch(prose, -1) {
		slug := strings.ReplaceAll(keep.ReplaceAllString(strings.ToLower(m[1]), ""), " ", "-")
		anchor := slug
		for i := 1; seen[anchor]; i++ {
			anchor = fmt.Sprintf("%s-%d", slug, i)
		}
		seen[anchor] = true
	}
	return seen
}

func TestAnchors(t *testing.T) {
	got := anchors("# Title\n\n## The TA's metrics\n\n```sh\n# not a heading\n```\n\n## `/status`\n\n### Title\n\n## What a leader change or a partition costs\n")
	assert.Equal(t, map[string]bool{"title": true, "the-tas-metrics": true, "status": true, "title-1": true,
		"what-a-leader-change-or-a-partition-costs": true}, got)
}

func TestBlocks(t *testing.T) {
	blocks, prose := Blocks("text\n```yaml\na: 1\n```\nmore\n````md\n```go\nx\n```\n````\n  ```\nopen")
	assert.Equal(t, []Block{
		{Lang: "yaml", Line: 2, Text: "a: 1\n"},
		{Lang: "md", Line: 6, Text: "```go\nx\n```\n"},
		{Lang: "", Line: 11, Text: "open"},
	}, blocks)
	assert.Equal(t, "text\n\n\n\nmore\n\n\n\n\n\n\n", prose)
}
