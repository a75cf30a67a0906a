package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// envPrefix starts every environment variable natstx reads:
// NATSTX_DATA_DIR sets --data-dir.
const envPrefix = "NATSTX_"

// envConfig names the config file when --config is not given.
const envConfig = envPrefix + "CONFIG"

// applyConfig fills the flags of cmd that were not given on the command line
// from, in this order of precedence, environment variables (NATSTX_<FLAG>,
// upper case, '-' as '_') and the YAML config file named by --config or
// NATSTX_CONFIG. Flags given on the command line win over both; defaults
// apply last. A config file key that is not a flag of cmd is a usage error,
// so a typo never goes unnoticed; environment variables that match no flag
// of cmd are ignored (one environment serves every command).
func applyConfig(cmd *cobra.Command) error {
	flags := cmd.Flags()
	path, _ := flags.GetString("config")
	if !flags.Changed("config") {
		if p := os.Getenv(envConfig); p != "" {
			path = p
		}
	}
	k := koanf.New(".")
	if path != "" {
		if err := k.Load(file.Provider(path), yaml.Parser()); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return usageError{fmt.Errorf("config file %s does not exist (check the --config path or %s)", path, envConfig)}
			}
			return usageError{fmt.Errorf("config file %s: %w (it must be a YAML map of flag names to values)", path, err)}
		}
		var unknown []string
		for _, key := range k.Keys() {
			if key == "config" || flags.Lookup(key) == nil {
				unknown = append(unknown, key)
			}
		}
		if len(unknown) > 0 {
			sort.Strings(unknown)
			return usageError{fmt.Errorf("config file %s: unknown key %s: the keys are the flag names of '%s' (see '%s --help')",
				path, strings.Join(unknown, ", "), cmd.CommandPath(), cmd.CommandPath())}
		}
	}
	envK := koanf.New(".")
	err := envK.Load(env.Provider(".", env.Opt{
		Prefix: envPrefix,
		TransformFunc: func(key, value string) (string, any) {
			if key == envConfig {
				return "", nil
			}
			name := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(key, envPrefix)), "_", "-")
			if flags.Lookup(name) == nil {
				return "", nil
			}
			return name, value
		},
	}), nil)
	if err != nil {
		return fmt.Errorf("reading %s* environment variables: %w", envPrefix, err)
	}
	var firstErr error
	flags.VisitAll(func(f *pflag.Flag) {
		if firstErr != nil || f.Changed || f.Name == "config" || f.Name == "help" {
			return
		}
		src, from := k, "config file "+path
		if envK.Exists(f.Name) {
			src, from = envK, envPrefix+strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		} else if !k.Exists(f.Name) {
			return
		}
		var val string
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			items := src.Strings(f.Name)
			if len(items) == 0 { // a scalar: one item, or a comma-separated list
				items = strings.Split(src.String(f.Name), ",")
			}
			if err := sv.Replace(items); err != nil {
				firstErr = usageError{fmt.Errorf("%s: %s: %w", from, f.Name, err)}
			}
			return
		}
		val = src.String(f.Name)
		if err := f.Value.Set(val); err != nil {
			firstErr = usageError{fmt.Errorf("%s: %s %q: %w", from, f.Name, val, err)}
		}
	})
	return firstErr
}
