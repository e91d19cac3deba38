package config

// ServerSide returns the waits the SMTP server applies, every one set: a
// phase left at 0 waits as long as command. (The relay-only and unused
// keys are left as they are.)
func (t Timeouts) ServerSide() Timeouts {
	c := Config{Timeouts: t}
	for i := range schema {
		k := &schema[i]
		if d := k.dur; k.ServerPhase && *d(&c) == 0 {
			*d(&c) = t.Command
		}
	}
	return c.Timeouts
}

// RelaySide returns the waits of the relay client, every one set: a key
// left at 0 takes its RelayDefault.
func (t Timeouts) RelaySide() Timeouts {
	c := Config{Timeouts: t}
	p := newParser(&c, nil, "")
	for i := range schema {
		k := &schema[i]
		if k.RelayDefault == "" || *k.dur(&c) != 0 {
			continue
		}
		if err := k.set(p, k.RelayDefault); err != nil {
			panic("config: relay default of " + k.Name + ": " + err.Error()) // TestSchemaDefaults
		}
	}
	return c.Timeouts
}
