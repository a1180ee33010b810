// Package corelink implements the CoRE Link Format (RFC 6690, CoAP
// Content-Format 40) that LwM2M uses in Register, Update and Discover
// (LwM2M 1.1 Core §5.2.7, §6.2.7).
package corelink

import (
	"errors"
	"fmt"
	"strings"
)

// ErrMalformed reports a payload that is not valid link format.
var ErrMalformed = errors.New("corelink: malformed link format")

// MaxLinks caps the links one payload may carry, and MaxParams the
// parameters of one link.
const (
	MaxLinks  = 10000
	MaxParams = 64
)

// Link is one link-value: a target URI and its parameters, in order.
type Link struct {
	Target string
	Params []Param
}

// Param is one link parameter. Value is unquoted; an empty Value stands
// for a parameter without a value, such as ";obs". (A quoted empty value,
// `;title=""`, therefore parses to the same Param.)
type Param struct {
	Name, Value string
}

// Get returns the value of the first parameter called name.
func (l Link) Get(name string) (value string, ok bool) {
	for _, p := range l.Params {
		if p.Name == name {
			return p.Value, true
		}
	}
	return "", false
}

func (l Link) String() string { return string(appendLink(nil, l)) }

// Encode writes links as "</3/0>;ver=1.1,</5/0>". A value is quoted when
// it is not a bare token, and "rt" always is (LwM2M writes rt="oma.lwm2m").
// A ">" in a target is percent-encoded so that the result stays parseable.
func Encode(links []Link) []byte {
	var b []byte
	for i, l := range links {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendLink(b, l)
	}
	return b
}

func appendLink(b []byte, l Link) []byte {
	b = append(b, '<')
	b = append(b, strings.ReplaceAll(l.Target, ">", "%3E")...)
	b = append(b, '>')
	for _, p := range l.Params {
		b = append(b, ';')
		b = append(b, p.Name...)
		if p.Value == "" {
			continue
		}
		b = append(b, '=')
		if p.Name != "rt" && isToken(p.Value) {
			b = append(b, p.Value...)
			continue
		}
		b = append(b, '"')
		for i := 0; i < len(p.Value); i++ {
			if c := p.Value[i]; c == '"' || c == '\\' {
				b = append(b, '\\')
			}
			b = append(b, p.Value[i])
		}
		b = append(b, '"')
	}
	return b
}

// isToken reports whether s may be written unquoted. It is stricter than
// RFC 6690's ptoken, leaving out "<", ">", "=" and "?" that confuse simple
// parsers.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			strings.IndexByte("!#$%&'()*+-./:@[]^_`{|}~", c) >= 0) {
			return false
		}
	}
	return s != ""
}

// isNameChar reports whether c may appear in a parameter name
// (RFC 5988 parmname, plus "*" for extended parameters).
func isNameChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		strings.IndexByte("!#$&+-.^_`|~*", c) >= 0
}

// Parse reads a link-format payload. It allows white space around the
// separators, which RFC 6690 does not but some peers send, and quoted
// values that hold commas and semicolons. An empty payload has no links.
func Parse(data []byte) ([]Link, error) {
	p := parser{s: string(data)}
	var links []Link
	p.space()
	if p.done() {
		return nil, nil
	}
	for {
		if len(links) == MaxLinks {
			return nil, fmt.Errorf("%w: more than %d links", ErrMalformed, MaxLinks)
		}
		l, err := p.link()
		if err != nil {
			return nil, err
		}
		links = append(links, l)
		p.space()
		if p.done() {
			return links, nil
		}
		if !p.eat(',') {
			return nil, p.errorf("expected ','")
		}
		p.space()
	}
}

type parser struct {
	s   string
	pos int
}

func (p *parser) done() bool { return p.pos >= len(p.s) }

func (p *parser) errorf(format string, args ...any) error {
	return fmt.Errorf("%w: at byte %d: %s", ErrMalformed, p.pos, fmt.Sprintf(format, args...))
}

func (p *parser) eat(c byte) bool {
	if p.pos < len(p.s) && p.s[p.pos] == c {
		p.pos++
		return true
	}
	return false
}

func (p *parser) space() {
	for p.pos < len(p.s) && strings.IndexByte(" \t\r\n", p.s[p.pos]) >= 0 {
		p.pos++
	}
}

func (p *parser) link() (Link, error) {
	if !p.eat('<') {
		return Link{}, p.errorf("expected '<'")
	}
	end := strings.IndexByte(p.s[p.pos:], '>')
	if end < 0 {
		return Link{}, p.errorf("unterminated target")
	}
	l := Link{Target: p.s[p.pos : p.pos+end]}
	p.pos += end + 1
	for {
		p.space()
		if !p.eat(';') {
			return l, nil
		}
		if len(l.Params) == MaxParams {
			return Link{}, p.errorf("more than %d parameters", MaxParams)
		}
		p.space()
		start := p.pos
		for p.pos < len(p.s) && isNameChar(p.s[p.pos]) {
			p.pos++
		}
		if p.pos == start {
			return Link{}, p.errorf("expected a parameter name")
		}
		prm := Param{Name: p.s[start:p.pos]}
		p.space()
		if p.eat('=') {
			p.space()
			v, err := p.value()
			if err != nil {
				return Link{}, err
			}
			prm.Value = v
		}
		l.Params = append(l.Params, prm)
	}
}

// value reads a quoted-string or a ptoken.
func (p *parser) value() (string, error) {
	if p.eat('"') {
		var b strings.Builder
		for p.pos < len(p.s) {
			c := p.s[p.pos]
			p.pos++
			switch c {
			case '"':
				return b.String(), nil
			case '\\':
				if p.pos == len(p.s) {
					return "", p.errorf("unterminated escape")
				}
				c = p.s[p.pos]
				p.pos++
			}
			b.WriteByte(c)
		}
		return "", p.errorf("unterminated quoted value")
	}
	start := p.pos
	for p.pos < len(p.s) {
		c := p.s[p.pos]
		if c == ',' || c == ';' || c <= ' ' || c == '"' || c == '\\' || c >= 0x7f {
			break
		}
		p.pos++
	}
	if p.pos == start {
		return "", p.errorf("expected a parameter value")
	}
	return p.s[start:p.pos], nil
}
