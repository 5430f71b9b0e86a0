package stream

import (
	"testing"
	"time"
)

func TestGenerationOf(t *testing.T) {
	g := Generation{Generation: 2, System: "7", Timeline: 1, Database: "app", Slot: "pgjet_app", Start: 0x3000000,
		PrevSeq: 140, PrevLSN: 0x2A00000, Region: "r1", Planned: true, PromotedAt: time.Unix(1700000000, 0).UTC()}
	env, err := g.Envelope("app")
	if err != nil {
		t.Fatal(err)
	}
	// Through the codec, as appliers read it.
	envs, err := DecodeMessage(Encode(env))
	if err != nil {
		t.Fatal(err)
	}
	got, ok, err := GenerationOf(envs[0])
	if !ok || err != nil || got != g {
		t.Fatalf("GenerationOf = %+v, %v, %v; want %+v", got, ok, err, g)
	}
	if envs[0].CommitLSN != g.Start || envs[0].EndLSN != g.Start {
		t.Errorf("marker at LSN %s/%s, want the new generation's start %s", envs[0].CommitLSN, envs[0].EndLSN, g.Start)
	}
	msg := func(prefix, content string) *Envelope {
		return &Envelope{Kind: KindMessage, Source: "app", Flags: FlagFirst | FlagLast, Changes: []Change{{Op: OpMessage, Prefix: prefix, Content: []byte(content)}}}
	}
	for _, c := range []struct {
		name    string
		env     *Envelope
		ok, bad bool
	}{
		{"heartbeat", &Envelope{Kind: KindHeartbeat, Source: "app"}, false, false},
		{"another message", msg("app.event", "{}"), false, false},
		{"garbled", msg(PrefixGeneration, "{"), true, true},
		{"generation 1", msg(PrefixGeneration, `{"generation":1,"system":"7","start_lsn":5}`), true, true},
		{"no system", msg(PrefixGeneration, `{"generation":2,"start_lsn":5}`), true, true},
		{"no start", msg(PrefixGeneration, `{"generation":2,"system":"7"}`), true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, ok, err := GenerationOf(c.env)
			if ok != c.ok || (err != nil) != c.bad {
				t.Errorf("GenerationOf: ok %v, err %v; want ok %v, error %v", ok, err, c.ok, c.bad)
			}
		})
	}
}

func FuzzGenerationOf(f *testing.F) {
	f.Add([]byte(`{"generation":2,"system":"7","start_lsn":5,"prev_seq":3}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, content []byte) {
		env := &Envelope{Kind: KindMessage, Source: "app", Changes: []Change{{Op: OpMessage, Prefix: PrefixGeneration, Content: content}}}
		g, ok, err := GenerationOf(env)
		if !ok {
			t.Fatal("a message of the generation prefix is not taken for a marker")
		}
		if err == nil && (g.Generation < 2 || g.System == "" || g.Start == 0) {
			t.Fatalf("incomplete marker accepted: %+v", g)
		}
	})
}
