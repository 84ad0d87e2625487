package config

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Setting is one setting of setflow: its environment variable, its flag, its
// default and its meaning. Every group of settings (Ingress, Reactions, …)
// declares its settings as a table of these; Register turns the table into
// flags whose values come from the environment first, and Settings lists every
// table for the README's configuration table (config/readme_test.go).
//
// One rule for all: a variable that is unset or empty leaves the default; a
// flag given on the command line wins over the variable; a value that does not
// parse is an error naming the variable (or the flag), never a silent default.
type Setting struct {
	Env  string
	Flag string // "" only for a secret
	// Default is the value before the environment and flags, written as on
	// the command line ("" for none).
	Default string
	Usage   string
	// Secret settings are read from the environment only, never from a flag
	// (flags show up in process listings), and are scrubbed from logs.
	Secret bool
	// URL settings may carry credentials: shown redacted, scrubbed from logs.
	URL bool
	// ptr receives the value: *string, *bool, *int, *int64, *float64,
	// *time.Duration or *[]string (comma-separated).
	ptr any
}

// register defines the flags of a settings table on fs, each set from its
// default and then from the environment. A variable that does not parse is
// kept as an error on the flag, reported by EnvError unless the flag is given.
func register(fs *flag.FlagSet, table []Setting) {
	setDefaults(table)
	for i := range table {
		s := &table[i]
		v := &value{s: s}
		if env := strings.TrimSpace(os.Getenv(s.Env)); env != "" {
			if err := s.set(env); err != nil {
				v.err = fmt.Errorf("%s: %w", s.name(), err)
			}
		}
		if s.Secret {
			continue
		}
		usage := s.Usage + " (env " + s.Env
		if s.URL {
			usage += "; a password shows as " + Redacted
		}
		if kind := s.kind(); kind != "" && !strings.Contains(s.Usage, "`") {
			// -h shows the first `word` as the flag's argument.
			usage += "; `" + kind + "`"
		}
		fs.Var(v, s.Flag, usage+")")
	}
}

// kind names a flag's argument in -h ("" for a boolean, which takes none).
func (s *Setting) kind() string {
	switch s.ptr.(type) {
	case *string:
		return "string"
	case *[]string:
		return "list"
	case *int, *int64:
		return "int"
	case *float64:
		return "number"
	case *time.Duration:
		return "duration"
	}
	return ""
}

// pick is the settings of table with the given variables.
func pick(table []Setting, envs ...string) []Setting {
	var out []Setting
	for _, s := range table {
		if slices.Contains(envs, s.Env) {
			out = append(out, s)
		}
	}
	if len(out) != len(envs) {
		panic(fmt.Sprintf("config: pick %v: a variable is not in the table", envs))
	}
	return out
}

// setDefaults sets every setting of table to its default, ignoring the
// environment.
func setDefaults(table []Setting) {
	for i := range table {
		if err := table[i].set(table[i].Default); err != nil {
			panic(fmt.Sprintf("config: default of %s: %v", table[i].Env, err)) // a typo in a table; config's tests catch it
		}
	}
}

// name is how errors name the setting: its variable and its flag.
func (s *Setting) name() string {
	if s.Flag == "" {
		return s.Env
	}
	return s.Env + " (-" + s.Flag + ")"
}

func (s *Setting) set(text string) error {
	switch p := s.ptr.(type) {
	case *string:
		*p = text
		if s.URL {
			Secrets().AddURL(text)
		}
	case *[]string:
		*p = splitList(text)
	case *bool:
		if text == "" {
			text = "false"
		}
		b, err := strconv.ParseBool(text)
		if err != nil {
			return fmt.Errorf("%q is not a boolean (true or false)", text)
		}
		*p = b
	case *int:
		n, err := strconv.Atoi(orZero(text))
		if err != nil {
			return fmt.Errorf("%q is not a whole number", text)
		}
		*p = n
	case *int64:
		n, err := strconv.ParseInt(orZero(text), 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", text)
		}
		*p = n
	case *float64:
		f, err := strconv.ParseFloat(orZero(text), 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", text)
		}
		*p = f
	case *time.Duration:
		d, err := ParseDuration(orZero(text))
		if err != nil {
			return err
		}
		*p = d
	default:
		panic(fmt.Sprintf("config: %s has an unsupported type %T", s.Env, s.ptr))
	}
	return nil
}

func orZero(text string) string {
	if text == "" {
		return "0"
	}
	return text
}

// ParseDuration reads a duration as Go writes it (300ms, 90s, 1m30s, 6h) or a
// whole number of days, "7d", since retention windows are usually counted in
// days. Mixed forms such as "1d12h" are refused; write "36h".
func ParseDuration(text string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(text, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 || n > 100*365 {
			return 0, fmt.Errorf("%q is not a duration: days are a whole number, e.g. 7d (else write hours, e.g. 36h)", text)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(text)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (e.g. 90s, 15m, 6h or 7d)", text)
	}
	return d, nil
}

// value is a setting's flag.
type value struct {
	s *Setting
	// err is the environment's value that did not parse; a flag given on
	// the command line replaces it.
	err error
}

func (v *value) String() string {
	if v == nil || v.s == nil {
		return ""
	}
	switch p := v.s.ptr.(type) {
	case *string:
		if v.s.URL {
			return RedactURL(*p)
		}
		return *p
	case *[]string:
		return strings.Join(*p, ",")
	case *time.Duration:
		return p.String()
	default:
		return fmt.Sprint(deref(p))
	}
}

func deref(p any) any {
	switch p := p.(type) {
	case *bool:
		return *p
	case *int:
		return *p
	case *int64:
		return *p
	case *float64:
		return *p
	}
	return p
}

func (v *value) Set(text string) error {
	if err := v.s.set(text); err != nil {
		return err
	}
	v.err = nil
	return nil
}

// IsBoolFlag lets a boolean flag be given without a value (-discovery).
func (v *value) IsBoolFlag() bool {
	_, ok := v.s.ptr.(*bool)
	return ok
}

// EnvError reports, naming each, the environment variables of fs's settings
// whose values did not parse (and whose flags were not given instead). Call it
// after fs.Parse; Parse does both.
func EnvError(fs *flag.FlagSet) error {
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if v, ok := f.Value.(*value); ok && v.err != nil {
			errs = append(errs, v.err)
		}
	})
	return errors.Join(errs...)
}

// Parse parses args into fs and then reports invalid environment values.
func Parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	return EnvError(fs)
}

// IsSet reports whether the setting of the flag name was given, on the
// command line or in its environment variable, rather than left at its
// default.
func IsSet(fs *flag.FlagSet, name string) bool {
	f := fs.Lookup(name)
	if f == nil {
		return false
	}
	set := false
	fs.Visit(func(g *flag.Flag) { set = set || g.Name == name })
	if v, ok := f.Value.(*value); ok && !set {
		set = strings.TrimSpace(os.Getenv(v.s.Env)) != ""
	}
	return set
}

// group is a table of settings (Ingress, Reactions, …).
type group interface{ settings() []Setting }

// FromEnv reads a group of settings from the environment alone, for the
// commands that do not take its flags (the bench's server, the operator
// commands' audit key); a variable that does not parse is an error naming it.
func FromEnv[T any, P interface {
	*T
	group
}]() (T, error) {
	var g T
	fs := flag.NewFlagSet("env", flag.ContinueOnError)
	register(fs, P(&g).settings())
	return g, EnvError(fs)
}
