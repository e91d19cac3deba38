package server

import (
	"log/slog"

	"github.com/mxguard/mxguard/internal/cache"
	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/dnsbl"
	"github.com/mxguard/mxguard/internal/metrics"
	"github.com/redis/go-redis/v9"
)

// newDNSBL makes the checker of [dnsbl] sites, or none without sites, and
// registers its counters. Its cache is the fleet's when there is one (a
// list is asked about a client once for all nodes, per min_ttl at least),
// else the node's own.
func newDNSBL(cfg *config.Config, rc redis.UniversalClient, logger *slog.Logger, m *metrics.Metrics, closers *[]func()) (*dnsbl.Checker, error) {
	if len(cfg.DNSBL.Sites) == 0 {
		return nil, nil
	}
	sites, err := dnsbl.ParseSites(cfg.DNSBL.Sites) // checked by config
	if err != nil {
		return nil, cfg.KeyError("dnsbl.sites", err)
	}
	var answers cache.Cache // nil: the checker's own, read without a goroutine
	if rc != nil {
		if answers, err = newCache(cfg, rc, dnsbl.DefaultCacheSize, logger, closers); err != nil {
			return nil, err
		}
	}
	c, err := dnsbl.New(dnsbl.Config{
		Cache:       answers,
		Sites:       sites,
		Server:      cfg.Resolver,
		Timeout:     cfg.DNSBL.Timeout,
		MaxInFlight: max(cfg.DNSBL.MaxInFlight, len(sites)),
		MinTTL:      cfg.DNSBL.MinTTL,
		MaxTTL:      cfg.DNSBL.MaxTTL,
	}, logger)
	if err != nil {
		return nil, cfg.KeyError("dnsbl.sites", err)
	}
	*closers = append(*closers, c.Close)
	m.CounterFunc("mxguard_dnsbl_results_total",
		"What each [dnsbl] site said of the clients asked about: listed, not_listed, timeout, error (counted as not listed) and busy (not asked: max_in_flight).",
		[]string{"site", "outcome"}, func(emit func(float64, ...string)) {
			for _, st := range c.Stats().Sites {
				site := st.Site.String()
				for o, n := range st.Outcomes {
					emit(float64(n), site, dnsbl.Outcome(o).String())
				}
			}
		})
	m.CounterFunc("mxguard_dnsbl_lookups_total",
		"DNS list lookups by how they were answered: query (sent to the DNS server), cache (from the cache), busy (not sent: max_in_flight).",
		[]string{"source"}, func(emit func(float64, ...string)) {
			st := c.Stats()
			emit(float64(st.Queries), "query")
			emit(float64(st.CacheHits), "cache")
			emit(float64(st.Busy), "busy")
		})
	return c, nil
}
