package doctor

import (
	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/server"
)

// Config loads the configuration file at path and runs on it every check of
// `mxguard check` (server.Check: the kind of each path, the access map, the
// TCP-wrappers files, the trust and deny lists, recipients and aliases, the
// STARTTLS key pair). Every warning is a Warn, every error a Fail, one a
// line with the file and line it comes from. The configuration is nil when
// the file does not load.
func Config(path string) (*config.Config, []Finding) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, lines(Fail, CheckConfig, err.Error())
	}
	var out []Finding
	for _, w := range cfg.Warnings {
		out = append(out, lines(Warn, CheckConfig, w)...)
	}
	warnings, err := server.Check(cfg)
	for _, w := range warnings {
		out = append(out, lines(Warn, CheckConfig, w)...)
	}
	if err != nil {
		return cfg, append(out, lines(Fail, CheckConfig, err.Error())...)
	}
	return cfg, append(out, finding(OK, CheckConfig, "%s loads, and every file it names reads (as mxguard check)", path))
}
