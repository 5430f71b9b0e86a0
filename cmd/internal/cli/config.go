package cli

import (
	"encoding/csv"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// ConfigFlag is the flag (and PGJET_CONFIG the variable) naming a daemon's
// YAML configuration file.
const ConfigFlag = "config"

// loadConfig sets, from the YAML file at path, every flag of fs that is
// neither on the command line nor in the environment (those win). The
// file's keys are flag names; a key that is no flag, or a value of the
// wrong type, is an error naming the key and the file.
func loadConfig(fs *pflag.FlagSet, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config file: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("config file %s is not valid YAML: %w", path, err)
	}
	if len(doc.Content) == 0 {
		return nil // empty file
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("config file %s: expected a mapping of flag names to values (nats: nats://..., group-txns: 500)", path)
	}
	var errs []error
	seen := map[string]bool{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		key, val := root.Content[i], root.Content[i+1]
		name := key.Value
		f := fs.Lookup(name)
		if f == nil || name == ConfigFlag || noEnv(name) || name == "check-config" {
			errs = append(errs, fmt.Errorf("%s line %d: unknown key %q (keys are the flag names of --help without the dashes)", path, key.Line, name))
			continue
		}
		if seen[name] {
			errs = append(errs, fmt.Errorf("%s line %d: key %q is given twice", path, key.Line, name))
			continue
		}
		seen[name] = true
		if f.Changed {
			continue // a flag or PGJET_* variable wins
		}
		v, err := yamlValue(f, val)
		if err == nil && fs.Set(name, v) != nil {
			err = fmt.Errorf("expected %s, got %q", describe(f.Value.Type()), val.Value)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s line %d: key %q: %w", path, val.Line, name, err))
		}
	}
	return errors.Join(errs...)
}

// yamlValue checks a YAML value against flag f's type and returns it as
// the flag's string form.
func yamlValue(f *pflag.Flag, val *yaml.Node) (string, error) {
	typ := f.Value.Type()
	if _, ok := f.Value.(pflag.SliceValue); ok {
		switch val.Kind {
		case yaml.SequenceNode:
			items := make([]string, 0, len(val.Content))
			for _, it := range val.Content {
				if it.Kind != yaml.ScalarNode {
					return "", errors.New("expected a list of strings")
				}
				items = append(items, it.Value)
			}
			// pflag reads slices as one CSV record: quote what needs it.
			var b strings.Builder
			w := csv.NewWriter(&b)
			if err := w.Write(items); err != nil {
				return "", err
			}
			w.Flush()
			return strings.TrimSuffix(b.String(), "\n"), nil
		case yaml.ScalarNode:
			return val.Value, nil // a, b, c as on the command line
		}
		return "", errors.New("expected a list of strings")
	}
	if val.Kind != yaml.ScalarNode || val.Tag == "!!null" {
		return "", fmt.Errorf("expected %s", describe(typ))
	}
	want := map[string][]string{
		"bool":   {"!!bool"},
		"int":    {"!!int"},
		"int64":  {"!!int"},
		"uint64": {"!!int"},
		"string": {"!!str", "!!int", "!!float", "!!bool"}, // a region named 1 is still a name
		// Durations are strings with a unit (10s, 1h30m); a bare number
		// would be nanoseconds, which nobody means.
		"duration": {"!!str"},
	}[typ]
	if want != nil && !slices.Contains(want, val.Tag) {
		return "", fmt.Errorf("expected %s, got %q", describe(typ), val.Value)
	}
	return val.Value, nil
}

// describe names a pflag type for a person.
func describe(typ string) string {
	switch typ {
	case "bool":
		return "true or false"
	case "int", "int64", "uint64":
		return "an integer"
	case "duration":
		return "a duration such as 10s, 5m or 1h30m"
	case "string":
		return "a string"
	}
	return "a " + typ
}
