package importer

import (
	"net"
	"net/url"
	"strings"
	"time"
)

// curlGET is a curl command that only GETs a URL and fails or passes on
// the answer: what many keepalived track scripts are, OpenShift's chk_ocp
// among them. vigil's http check does the same without a shell or curl,
// which the distroless image lacks.
type curlGET struct {
	URL      string
	Insecure bool // -k
	// Fail is -f: an HTTP status of 400 or more fails the command. Without
	// it curl passes on any answer at all.
	Fail bool
	// Timeout is --max-time or the timeout(1) around the command; 0 when
	// neither is given.
	Timeout time.Duration
	// ZeroHost: the URL named the host "0", which the C resolver reads as
	// 0.0.0.0 (this host); it is rewritten to 127.0.0.1.
	ZeroHost bool
}

// shellWords splits a command line into words, honouring single and double
// quotes and backslash line continuations. ok is false for anything a
// shell would do more with: substitutions, pipes, redirections other than
// to /dev/null, lists other than &&.
func shellWords(line string) (words []string, ok bool) {
	var cur strings.Builder
	has, quote := false, rune(0)
	for _, r := range line {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			if quote == '"' && (r == '$' || r == '`') {
				return nil, false
			}
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, has = r, true
		case r == ' ' || r == '\t':
			if has {
				words = append(words, cur.String())
			}
			cur.Reset()
			has = false
		case strings.ContainsRune("$`|;<(){}*", r):
			return nil, false
		default:
			cur.WriteRune(r)
			has = true
		}
	}
	if quote != 0 {
		return nil, false
	}
	if has {
		words = append(words, cur.String())
	}
	// Redirections of output are harmless; of anything else, not ours.
	out := words[:0]
	for _, w := range words {
		switch w {
		case ">/dev/null", "2>/dev/null", "&>/dev/null", "2>&1", "1>/dev/null":
			continue
		}
		if strings.ContainsAny(w, ">&") && w != "&&" {
			return nil, false
		}
		out = append(out, w)
	}
	return out, true
}

// stripTimeout removes a leading timeout(1) (timeout DURATION ...) and
// returns its duration; keepalived configs wrap curl in it to bound it by
// the script interval.
func stripTimeout(words []string) ([]string, time.Duration) {
	if len(words) >= 3 && (words[0] == "timeout" || words[0] == "/usr/bin/timeout" || words[0] == "/bin/timeout") {
		if d, err := kaSeconds(strings.TrimSuffix(words[1], "s")); err == nil {
			return words[2:], d
		}
	}
	return words, 0
}

// parseCurl recognises one command: [timeout N] [exec] curl OPTIONS URL,
// where the options only shape output, TLS verification, redirects,
// failure on an HTTP error and time. Anything else (a header, a body, a
// method, a second URL) is not a plain GET: ok false.
func parseCurl(words []string) (c curlGET, ok bool) {
	words, c.Timeout = stripTimeout(words)
	if len(words) > 0 && words[0] == "exec" {
		words = words[1:]
	}
	if len(words) < 2 || (words[0] != "curl" && words[0] != "/usr/bin/curl" && words[0] != "/bin/curl") {
		return c, false
	}
	for i := 1; i < len(words); i++ {
		w := words[i]
		next := func() (string, bool) {
			if i+1 >= len(words) {
				return "", false
			}
			i++
			return words[i], true
		}
		switch {
		case w == "--insecure":
			c.Insecure = true
		case w == "--fail":
			c.Fail = true
		case w == "--location", w == "--silent", w == "--show-error":
		case w == "--output", w == "--connect-timeout":
			if _, ok := next(); !ok {
				return c, false
			}
		case w == "--max-time":
			v, ok := next()
			if !ok || !c.maxTime(v) {
				return c, false
			}
		case w == "--request" || w == "-X":
			if v, ok := next(); !ok || v != "GET" {
				return c, false
			}
		case strings.HasPrefix(w, "--"):
			return c, false
		case strings.HasPrefix(w, "-") && len(w) > 1:
			// A cluster of short options (-kLfs); o and m take the rest of
			// the word (-o/dev/null) or, at its end, the next word.
		cluster:
			for j, f := range w[1:] {
				switch f {
				case 'k':
					c.Insecure = true
				case 'f':
					c.Fail = true
				case 'L', 's', 'S':
				case 'o', 'm':
					v, ok := w[j+2:], true
					if v == "" {
						v, ok = next()
					}
					if !ok || (f == 'm' && !c.maxTime(v)) {
						return c, false
					}
					break cluster
				default:
					return c, false
				}
			}
		default:
			if c.URL != "" || !(strings.HasPrefix(w, "http://") || strings.HasPrefix(w, "https://")) {
				return c, false
			}
			u, err := url.Parse(w)
			if err != nil || u.Host == "" {
				return c, false
			}
			if u.Hostname() == "0" {
				c.ZeroHost = true
				p := u.Port()
				u.Host = "127.0.0.1"
				if p != "" {
					u.Host = net.JoinHostPort("127.0.0.1", p)
				}
			}
			c.URL = u.String()
		}
	}
	return c, c.URL != ""
}

func (c *curlGET) maxTime(v string) bool {
	d, err := kaSeconds(v)
	if err != nil {
		return false
	}
	if c.Timeout == 0 || d < c.Timeout {
		c.Timeout = d
	}
	return true
}

// curlChain recognises a script made of curl GETs only: one command line
// (keepalived's script "..."), or a script file's text, its commands on
// lines or joined by && (all must pass, as vigil's tracked checks with
// weight 0). A shebang, comments, blank lines and set -e are allowed.
func curlChain(text string) ([]curlGET, bool) {
	text = strings.ReplaceAll(text, "\\\n", " ")
	var out []curlGET
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "set -") || (i == 0 && strings.HasPrefix(line, "#!")) {
			continue
		}
		words, ok := shellWords(line)
		if !ok {
			return nil, false
		}
		for len(words) > 0 {
			end := len(words)
			for j, w := range words {
				if w == "&&" {
					end = j
					break
				}
			}
			c, ok := parseCurl(words[:end])
			if !ok {
				return nil, false
			}
			out = append(out, c)
			if end == len(words) {
				break
			}
			words = words[end+1:]
		}
	}
	return out, len(out) > 0
}
