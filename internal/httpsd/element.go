// Package httpsd holds a target's element of an HTTP SD answer, the one
// representation of a target's discovered labels that the leader keeps:
// discovery encodes it once, after relabeling, and the answers are
// concatenations of elements. The labels are decoded from it where they are
// needed (the status page, tests), which is rare.
package httpsd

import (
	"encoding/json"
	"unicode/utf8"
	"unsafe"

	"github.com/prometheus/common/model"

	"github.com/prometheus/prometheus/model/labels"
)

// Element is a target's element of an HTTP SD answer,
// {"targets":["<__address__>"],"labels":{...}}, exactly as encoding/json
// writes a TargetGroup of those labels (labels sorted by name, HTML
// characters escaped, invalid UTF-8 as \ufffd), without the newline.
type Element string

// TargetGroup is one element of an HTTP SD answer, as encoding/json sees it.
type TargetGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// Encode returns the element of a target of labels ls.
func Encode(ls labels.Labels) Element {
	sorted := make([]labels.Label, 0, ls.Len())
	ls.Range(func(l labels.Label) { sorted = append(sorted, l) })
	return EncodeSorted(sorted)
}

// EncodeSorted returns the element of a target of labels ls, sorted by
// name, one label per name. It allocates the element's bytes only, of
// exactly its size when nothing needs escaping.
func EncodeSorted(ls []labels.Label) Element {
	n := len(`{"targets":[""],"labels":{}}`)
	for _, l := range ls {
		n += len(l.Name) + len(l.Value) + len(`"":"",`)
		if l.Name == model.AddressLabel {
			n += len(l.Value)
		}
	}
	b := appendSorted(make([]byte, 0, n), ls)
	return Element(unsafe.String(unsafe.SliceData(b), len(b))) // b is not kept: no copy
}

func appendSorted(b []byte, ls []labels.Label) []byte {
	b = append(b, `{"targets":[`...)
	address := ""
	for _, l := range ls {
		if l.Name == model.AddressLabel {
			address = l.Value
			break
		}
	}
	b = appendString(b, address)
	b = append(b, `],"labels":{`...)
	for i, l := range ls {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, l.Name)
		b = append(b, ':')
		b = appendString(b, l.Value)
	}
	return append(b, "}}"...)
}

// Labels decodes the element's labels. They are the labels it was encoded
// from, except that invalid UTF-8 comes back as U+FFFD, as it was served.
// An element that is not one yields no labels.
func (e Element) Labels() labels.Labels {
	var g struct {
		Labels map[string]string `json:"labels"`
	}
	if json.Unmarshal([]byte(e), &g) != nil {
		return labels.EmptyLabels()
	}
	var sb labels.ScratchBuilder
	for name, value := range g.Labels {
		sb.Add(name, value)
	}
	sb.Sort()
	return sb.Labels()
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string, escaped as encoding/json escapes
// it with HTML escaping on: invalid UTF-8 becomes U+FFFD.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
