package demo

import (
	"fmt"
	"io"
	"regexp"
	"strings"
)

// narrator prints the walkthrough: numbered steps, the commands as a person
// would type them, and their output, indented under them.
type narrator struct {
	w    io.Writer
	step int
}

// begin starts the next numbered step.
func (n *narrator) begin(title string) {
	n.step++
	fmt.Fprintf(n.w, "\n%2d. %s\n", n.step, title)
}

// say prints an explanatory line under the current step.
func (n *narrator) say(format string, args ...any) {
	for _, line := range strings.Split(fmt.Sprintf(format, args...), "\n") {
		fmt.Fprintf(n.w, "    %s\n", line)
	}
}

// command prints a command line as typed at a shell prompt.
func (n *narrator) command(line string) {
	fmt.Fprintf(n.w, "    $ %s\n", line)
}

// output prints what a command printed, redacted and indented.
func (n *narrator) output(text string) {
	text = strings.TrimRight(redact(text), "\n")
	if text == "" {
		return
	}
	for _, line := range strings.Split(text, "\n") {
		fmt.Fprintf(n.w, "      %s\n", strings.TrimRight(line, " \t"))
	}
}

// hidden replaces secrets in what the demo shows.
const hidden = "…hidden…"

var secretPatterns = []*regexp.Regexp{
	// JSON of iamdb access-key create and aws sts: "SecretAccessKey": "…"
	regexp.MustCompile(`("(?:SecretAccessKey|SessionToken)"\s*:\s*")[^"]*(")`),
	// shell lines of iamdb init and access-key create --output text
	regexp.MustCompile(`((?:AWS_SECRET_ACCESS_KEY|AWS_SESSION_TOKEN)=)\S+()`),
	// a token's signature and session token, should one ever be printed
	regexp.MustCompile(`((?:X-Amz-Signature|X-Amz-Security-Token)=)[^&\s]+()`),
}

// redact hides secret access keys, session tokens and token signatures in
// s. The demo never prints tokens on purpose; this is the safety net for
// output of the real commands, which do print secrets once (iamdb init,
// iamdb access-key create, aws sts).
func redact(s string) string {
	for _, re := range secretPatterns {
		s = re.ReplaceAllString(s, "${1}"+hidden+"${2}")
	}
	return s
}

// shellQuote quotes s for a POSIX shell when it needs it, so the commands
// the demo shows can be pasted as they are.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=@,+%", r))
	}) < 0 {
		return s
	}
	// SQL with string literals reads better in double quotes, which are
	// safe as long as nothing in s is special inside them.
	if strings.Contains(s, "'") && !strings.ContainsAny(s, "\"$`\\!") {
		return `"` + s + `"`
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// shellLine quotes each word of a command line.
func shellLine(words ...string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = shellQuote(w)
	}
	return strings.Join(q, " ")
}
