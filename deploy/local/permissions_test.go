package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pgjet/pgjet/apply"
	"github.com/pgjet/pgjet/stream"
)

// permPasswords are the variables deploy/nats/permissions-*.conf read
// from nats-server's environment, and the leafnode password hub.conf's
// commented leafnode authorization reads.
var permPasswords = map[string]string{
	"PGJET_CAPTURE_APP_PASSWORD":  "capture-secret",
	"PGJET_APPLY_APP_R1_PASSWORD": "apply-r1-secret",
	"PGJET_APPLY_APP_R2_PASSWORD": "apply-r2-secret",
	"PGJET_NATS_ADMIN_PASSWORD":   "admin-secret",
	"PGJET_LEAF_PASSWORD":         "leaf-secret",
}

// TestPermissions checks deploy/nats/permissions-{hub,r1,r2}.conf: each
// is included into its server's config as the file says and parses; the
// three servers run from them with the leafnode link authenticated; the
// capture user of source "app" can do on the hub everything pgjet-capture
// does (create and update its stream, publish with expected-last-id
// chains, read the stream's last message; create and update its snapshot
// stream, publish snapshots, list them, read an interrupted one's outline
// with an ordered consumer, purge old ones), and each region's apply user
// everything pgjet-apply --upstream-domain hub does (create the mirror,
// recreate its durable consumer, pull and ack; create the snapshot mirror,
// list and read snapshots with ordered consumers, find where the changes
// take over after a restore), with and without --domain, without a single
// permissions violation; and neither may step outside its source, its
// consumers or its domain.
//
// The JetStream calls are those of the stream package, of
// apply.(*session).consumer, capture/snapshot.go and apply/restore.go,
// made here through nats.go as the daemons make them, without Postgres.
func TestPermissions(t *testing.T) {
	for k, v := range permPasswords {
		t.Setenv(k, v)
	}

	t.Run("missing password refuses to start", func(t *testing.T) {
		if err := os.Unsetenv("PGJET_CAPTURE_APP_PASSWORD"); err != nil {
			t.Fatal(err)
		}
		defer os.Setenv("PGJET_CAPTURE_APP_PASSWORD", permPasswords["PGJET_CAPTURE_APP_PASSWORD"])
		_, err := server.ProcessConfigFile(filepath.Join(natsConfDir, "permissions-hub.conf"))
		if err == nil || !strings.Contains(err.Error(), "PGJET_CAPTURE_APP_PASSWORD") {
			t.Errorf("parse permissions-hub.conf without PGJET_CAPTURE_APP_PASSWORD: err = %v, want one naming the variable", err)
		}
	})

	servers := map[string]*server.Options{}
	for name, restricted := range map[string]string{"hub": "pgjet_capture_app", "r1": "pgjet_apply_app_r1", "r2": "pgjet_apply_app_r2"} {
		o := loadWithPermissions(t, name)
		users := map[string]*server.User{}
		for _, u := range o.Users {
			users[u.Username] = u
		}
		if got, want := len(users), 2; got != want {
			t.Errorf("%s.conf + permissions-%s.conf: %d users, want %d (%s and pgjet_admin)", name, name, got, want, restricted)
		}
		u := users[restricted]
		switch {
		case u == nil:
			t.Errorf("permissions-%s.conf: no user %s", name, restricted)
		case u.Permissions == nil || u.Permissions.Publish == nil || u.Permissions.Subscribe == nil:
			t.Errorf("permissions-%s.conf: user %s must have publish and subscribe permissions", name, restricted)
		case len(u.Permissions.Subscribe.Allow) != 1 || u.Permissions.Subscribe.Allow[0] != "_INBOX.>":
			t.Errorf("permissions-%s.conf: user %s may subscribe to %v, want only _INBOX.>", name, restricted, u.Permissions.Subscribe.Allow)
		}
		if a := users["pgjet_admin"]; a == nil {
			t.Errorf("permissions-%s.conf: no user pgjet_admin", name)
		}
		if !o.JetStream || o.JetStreamDomain != name {
			t.Errorf("%s.conf + permissions-%s.conf: JetStream %v in domain %q, want domain %q", name, name, o.JetStream, o.JetStreamDomain, name)
		}
		servers[name] = o
	}
	if t.Failed() {
		return
	}

	// The tighter setup the Security model describes: once an admin has
	// made the streams, the daemons' users need no STREAM.CREATE or
	// STREAM.UPDATE, which let them write any config (see "stream configs").
	tightUser(t, servers["hub"], "pgjet_capture_app", "pgjet_capture_app_tight",
		"$JS.API.STREAM.CREATE.PGJET_app", "$JS.API.STREAM.UPDATE.PGJET_app",
		"$JS.API.STREAM.CREATE.PGJET_SNAP_app", "$JS.API.STREAM.UPDATE.PGJET_SNAP_app")
	tightUser(t, servers["r1"], "pgjet_apply_app_r1", "pgjet_apply_app_r1_tight",
		"$JS.API.STREAM.CREATE.PGJET_app", "$JS.API.STREAM.CREATE.PGJET_SNAP_app", "$JS.API.STREAM.CREATE.PGJET_DLQ_app_r1")

	leafPort, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	leafPW := permPasswords["PGJET_LEAF_PASSWORD"]
	// What hub.conf's commented leafnode authorization line sets, and the
	// credentials every region's remote then dials with.
	servers["hub"].LeafNode.Username, servers["hub"].LeafNode.Password = "leaf", leafPW
	// r2 acks in the v2 format ($JS.ACK.<domain>.<account>.<stream>...),
	// r1 in the default one, so both ack lines of the files are exercised.
	servers["r2"].FeatureFlags = map[string]bool{server.FeatureFlagJsAckFormatV2: true}
	urls := map[string]string{}
	for _, name := range []string{"hub", "r1", "r2"} {
		urls[name] = runPermissioned(t, name, servers[name], leafPort, leafPW).ClientURL()
	}
	admin := map[string]*nats.Conn{}
	for name, u := range urls {
		admin[name], _ = permConnect(t, u, "pgjet_admin", "PGJET_NATS_ADMIN_PASSWORD")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// A JetStream request the permissions deny is dropped by the server:
	// the caller sees only a timeout, so each call gets a short one.
	call := func(t *testing.T) context.Context {
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		t.Cleanup(cancel)
		return c
	}
	for _, r := range []string{"r1", "r2"} {
		js, err := jetstream.NewWithDomain(admin["hub"], r)
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, natsReadyTimeout, "region "+r+" joined the hub with the leafnode credentials", func() (bool, error) {
			c, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			_, err := js.AccountInfo(c)
			return err == nil, err
		})
	}

	// A second source's stream: what the capture user of "app" must not
	// be able to write to.
	adminHub, err := jetstream.New(admin["hub"])
	if err != nil {
		t.Fatal(err)
	}
	other, err := stream.EnsureStream(ctx, adminHub, "other", stream.StreamOptions{MaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	otherSnap, err := stream.EnsureSnapshotStream(ctx, adminHub, "other", 1)
	if err != nil {
		t.Fatal(err)
	}

	const source = "app"
	var lastSeq uint64
	t.Run("capture", func(t *testing.T) {
		nc, errs := permConnect(t, urls["hub"], "pgjet_capture_app", "PGJET_CAPTURE_APP_PASSWORD")
		js, err := stream.NewJetStream(nc, "")
		if err != nil {
			t.Fatal(err)
		}
		// First start creates the stream, the next ones update it.
		for range 2 {
			if _, err := stream.EnsureStream(call(t), js, source, stream.StreamOptions{MaxAge: time.Hour, Duplicates: time.Minute}); err != nil {
				t.Fatalf("EnsureStream as pgjet_capture_app: %v", err)
			}
		}
		st, err := js.Stream(call(t), stream.StreamName(source))
		if err != nil {
			t.Fatal(err)
		}
		pub := stream.NewPublisher(js, stream.PublisherOptions{Window: 16, WindowBytes: 1 << 20, Start: 1, AckTimeout: 10 * time.Second})
		pctx, stopPub := context.WithCancel(ctx)
		defer stopPub()
		go func() { _ = pub.Run(pctx) }()
		msgs := []struct {
			subject, id string
			kind        stream.Kind
			confirm     stream.LSN
		}{
			{stream.TxnSubject(source), source + ":0/10:0", stream.KindTxn, 0x10},
			{stream.HeartbeatSubject(source), source + ":0/20:hb", stream.KindHeartbeat, 0x20},
			{stream.TxnSubject(source), source + ":0/30:0", stream.KindTxn, 0x30},
		}
		for _, m := range msgs {
			// Real envelopes: apply's stream.SeekLSN decodes them.
			data := stream.Encode(&stream.Envelope{Kind: m.kind, Source: source, CommitLSN: m.confirm, EndLSN: m.confirm,
				CommitTime: time.Now(), Flags: stream.FlagFirst | stream.FlagLast})
			if err := pub.Publish(call(t), m.subject, data, m.id, m.confirm); err != nil {
				t.Fatalf("publish %s as pgjet_capture_app: %v", m.subject, err)
			}
		}
		if err := pub.Drain(call(t)); err != nil {
			t.Fatalf("publish acks as pgjet_capture_app: %v", err)
		}
		if got, want := pub.Acked(), stream.LSN(0x30); got != want {
			t.Errorf("acked position = %s, want %s", got, want)
		}
		// What capture reads at start: the stream's last message.
		info, err := st.Info(call(t))
		if err != nil {
			t.Fatalf("stream info as pgjet_capture_app: %v", err)
		}
		lastSeq = info.State.LastSeq
		m, err := st.GetMsg(call(t), lastSeq)
		if err != nil {
			t.Fatalf("read the stream's last message as pgjet_capture_app: %v", err)
		}
		if got, want := m.Header.Get(jetstream.MsgIDHeader), msgs[len(msgs)-1].id; got != want {
			t.Errorf("last message id = %q, want %q", got, want)
		}
		noViolation(t, "pgjet_capture_app", errs)

		for _, subj := range []string{
			"pgjet.other.tx", // another source's stream
			"pgjet.other.hb",
			"$JS.API.STREAM.CREATE.PGJET_other",
			"$JS.API.STREAM.UPDATE.PGJET_other",
			"$JS.API.STREAM.DELETE.PGJET_app",
			"$JS.API.STREAM.PURGE.PGJET_app",
			"$JS.API.STREAM.MSG.DELETE.PGJET_app",
			"$JS.API.CONSUMER.CREATE.PGJET_app.reader", // read the stream
			"$JS.API.CONSUMER.CREATE.PGJET_app.pgjet_apply_r1",
		} {
			deniedPublish(t, nc, errs, subj)
		}
		deniedSubscribe(t, nc, errs, "pgjet.app.>")
		oi, err := other.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n := oi.State.Msgs; n != 0 {
			t.Errorf("stream PGJET_other holds %d messages published by pgjet_capture_app, want 0", n)
		}
	})
	if t.Failed() {
		return
	}

	// Snapshots as capture/snapshot.go takes them: an old complete one
	// (pruned below), a complete one and an interrupted one, the newest.
	now := time.Now()
	snapIDs := []string{
		stream.NewSnapshotID(now.Add(-2 * time.Hour)),
		stream.NewSnapshotID(now.Add(-time.Hour)),
		stream.NewSnapshotID(now),
	}
	t.Run("capture snapshots", func(t *testing.T) {
		nc, errs := permConnect(t, urls["hub"], "pgjet_capture_app", "PGJET_CAPTURE_APP_PASSWORD")
		js, err := stream.NewJetStream(nc, "")
		if err != nil {
			t.Fatal(err)
		}
		// TakeSnapshot ensures the stream at every snapshot: create, then update.
		var st jetstream.Stream
		for range 2 {
			if st, err = stream.EnsureSnapshotStream(call(t), js, source, 1); err != nil {
				t.Fatalf("EnsureSnapshotStream as pgjet_capture_app: %v", err)
			}
		}
		if st.CachedInfo().Config.AllowDirect {
			t.Errorf("%s allows direct gets: reads would go to $JS.API.DIRECT.GET, which the permissions do not grant", stream.SnapshotStreamName(source))
		}
		for i, id := range snapIDs {
			publishSnapshot(t, call(t), js, source, id, stream.LSN(0x10*(i+1)), i < len(snapIDs)-1)
		}
		// A message published again after a crash: a duplicate JetStream drops.
		ack, err := js.PublishMsg(call(t), snapshotMeta(source, snapIDs[2], stream.SnapBegin, "begin", []byte("{}")))
		if err != nil {
			t.Fatalf("publish a snapshot message again as pgjet_capture_app: %v", err)
		}
		if !ack.Duplicate {
			t.Errorf("snapshot message published again: not a duplicate")
		}

		snaps, err := stream.ListSnapshots(call(t), st, source)
		if err != nil {
			t.Fatalf("ListSnapshots as pgjet_capture_app: %v", err)
		}
		wantSnaps(t, snaps, snapIDs)

		// readSnapshotMeta: the outline of the interrupted snapshot.
		man, done, cname := readOutline(t, call(t), st, source, snapIDs[2])
		if man.ID != snapIDs[2] || len(done) != 1 {
			t.Errorf("outline of snapshot %s: manifest id %q, %d whole tables; want %q, 1", snapIDs[2], man.ID, len(done), snapIDs[2])
		}
		onlyLastConsumer(t, ctx, adminHub, stream.SnapshotStreamName(source), cname)

		// pruneSnapshots: the oldest goes.
		if err := st.Purge(call(t), jetstream.WithPurgeSubject(stream.SnapshotSubject(source, snapIDs[0])+".>")); err != nil {
			t.Fatalf("purge snapshot %s as pgjet_capture_app: %v", snapIDs[0], err)
		}
		snaps, err = stream.ListSnapshots(call(t), st, source)
		if err != nil {
			t.Fatalf("ListSnapshots as pgjet_capture_app: %v", err)
		}
		wantSnaps(t, snaps, snapIDs[1:])
		noViolation(t, "pgjet_capture_app", errs)

		for _, subj := range []string{
			"pgjetsnap.other.x.m", // another source's snapshots
			"pgjetsnap.other.x.d",
			"pgjetsnap.app.x", // not a snapshot subject
			"$JS.API.STREAM.CREATE.PGJET_SNAP_other",
			"$JS.API.STREAM.UPDATE.PGJET_SNAP_other",
			"$JS.API.STREAM.INFO.PGJET_SNAP_other",
			"$JS.API.STREAM.MSG.GET.PGJET_SNAP_other",
			"$JS.API.STREAM.PURGE.PGJET_SNAP_other",
			"$JS.API.STREAM.DELETE.PGJET_SNAP_app",
			"$JS.API.STREAM.MSG.DELETE.PGJET_SNAP_app",
			"$JS.API.DIRECT.GET.PGJET_SNAP_app",
			"$JS.API.CONSUMER.CREATE.PGJET_SNAP_app.reader",                   // unfiltered
			"$JS.API.CONSUMER.CREATE.PGJET_SNAP_app.reader.pgjetsnap.app.x.d", // rows
			"$JS.API.CONSUMER.CREATE.PGJET_SNAP_app.reader.pgjetsnap.app.>",
			"$JS.API.CONSUMER.DURABLE.CREATE.PGJET_SNAP_app.reader",
			"$JS.API.CONSUMER.CREATE.PGJET_SNAP_other.reader.pgjetsnap.other.x.m",
			"$JS.API.CONSUMER.MSG.NEXT.PGJET_SNAP_other.reader",
			"$JS.API.CONSUMER.CREATE.PGJET_app.reader.pgjet.app.tx", // the change stream, filtered
		} {
			deniedPublish(t, nc, errs, subj)
		}
		deniedSubscribe(t, nc, errs, "pgjetsnap.app.>")
		oi, err := otherSnap.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n := oi.State.Msgs; n != 0 {
			t.Errorf("stream PGJET_SNAP_other holds %d messages published by pgjet_capture_app, want 0", n)
		}
	})
	if t.Failed() {
		return
	}

	for _, region := range []string{"r1", "r2"} {
		user := "pgjet_apply_app_" + region
		cname := "pgjet_apply_" + region // apply.ConsumerName
		t.Run("apply "+region, func(t *testing.T) {
			if _, err := nats.Connect(urls["hub"], nats.UserInfo(user, permPasswords["PGJET_APPLY_APP_"+strings.ToUpper(region)+"_PASSWORD"])); err == nil {
				t.Errorf("%s connected to the hub; it must exist only on %s", user, region)
			}
			nc, errs := permConnect(t, urls[region], user, "PGJET_APPLY_APP_"+strings.ToUpper(region)+"_PASSWORD")
			// First as pgjet-apply --upstream-domain hub (it creates the
			// mirror), then with --domain <region> too, resuming after
			// the first message as apply does from its stored position.
			for i, domain := range []string{"", region} {
				js, err := stream.NewJetStream(nc, domain)
				if err != nil {
					t.Fatal(err)
				}
				st, err := stream.EnsureMirror(call(t), js, source, "hub", stream.MirrorLimits{MaxAge: time.Hour})
				if err != nil {
					t.Fatalf("EnsureMirror as %s (domain %q): %v", user, domain, err)
				}
				if err := st.DeleteConsumer(call(t), cname); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
					t.Fatalf("delete consumer %s as %s (domain %q): %v", cname, user, domain, err)
				}
				cc := jetstream.ConsumerConfig{
					Durable:       cname,
					AckPolicy:     jetstream.AckAllPolicy,
					AckWait:       5 * time.Minute,
					MaxAckPending: 1 << 20,
					MaxDeliver:    -1,
					DeliverPolicy: jetstream.DeliverAllPolicy,
				}
				first := uint64(1)
				if i > 0 {
					first = 2
					cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, first
				}
				cons, err := st.CreateOrUpdateConsumer(call(t), cc)
				if err != nil {
					t.Fatalf("create consumer %s as %s (domain %q): %v", cname, user, domain, err)
				}
				it, err := cons.Messages(jetstream.PullMaxBytes(32 << 20))
				if err != nil {
					t.Fatal(err)
				}
				var last jetstream.Msg
				for seq := first; seq <= lastSeq; seq++ {
					m, err := it.Next(jetstream.NextMaxWait(20 * time.Second))
					if err != nil {
						t.Fatalf("consume seq %d of the mirror as %s (domain %q): %v", seq, user, domain, err)
					}
					md, err := m.Metadata()
					if err != nil {
						t.Fatal(err)
					}
					if md.Sequence.Stream != seq {
						t.Fatalf("consumed stream seq %d, want %d", md.Sequence.Stream, seq)
					}
					last = m
				}
				if err := last.Ack(); err != nil {
					t.Fatal(err)
				}
				it.Stop()
				ajs, err := jetstream.New(admin[region])
				if err != nil {
					t.Fatal(err)
				}
				eventually(t, 10*time.Second, user+"'s ack reached its consumer", func() (bool, error) {
					c, err := ajs.Consumer(ctx, stream.StreamName(source), cname)
					if err != nil {
						return false, err
					}
					ci, err := c.Info(ctx)
					if err != nil {
						return false, err
					}
					return ci.AckFloor.Stream == lastSeq, fmt.Errorf("ack floor %d, want %d", ci.AckFloor.Stream, lastSeq)
				})
				// --on-bad-message dead-letter: its stream, and a dead letter.
				if err := apply.EnsureDeadLetters(call(t), js, source, region); err != nil {
					t.Fatalf("EnsureDeadLetters as %s (domain %q): %v", user, domain, err)
				}
				if _, err := js.Publish(call(t), apply.DeadLetterSubject(source, region), []byte("bad")); err != nil {
					t.Fatalf("publish a dead letter as %s (domain %q): %v", user, domain, err)
				}
				noViolation(t, fmt.Sprintf("%s (domain %q)", user, domain), errs)

				// maybeRestore: the snapshot mirror, its listing, a restore
				// read whole, a resumed one, and restorer.finish's seek.
				who := fmt.Sprintf("%s (domain %q)", user, domain)
				snap, err := stream.EnsureSnapshotMirror(call(t), js, source, "hub")
				if err != nil {
					t.Fatalf("EnsureSnapshotMirror as %s: %v", who, err)
				}
				if snap.CachedInfo().Config.AllowDirect {
					t.Errorf("mirror %s allows direct gets: reads would go to $JS.API.DIRECT.GET, which the permissions do not grant", stream.SnapshotStreamName(source))
				}
				var snaps []stream.SnapshotInfo
				eventually(t, 20*time.Second, "the snapshot mirror of "+region+" caught up", func() (bool, error) {
					snaps, err = stream.ListSnapshots(call(t), snap, source)
					if err != nil {
						return false, err
					}
					return len(snaps) == 2 && snaps[0].Msgs == 4 && snaps[1].Msgs == 3, fmt.Errorf("snapshots %+v", snaps)
				})
				wantSnaps(t, snaps, snapIDs[1:])
				id := snapIDs[1]
				msgs, cname := readSnapshot(t, call(t), snap, jetstream.OrderedConsumerConfig{
					FilterSubjects: []string{stream.SnapshotSubject(source, id) + ".>"}})
				if got, want := snapKinds(msgs), "begin table data table-end end"; got != want {
					t.Errorf("snapshot %s read as %s: %s, want %s", id, who, got, want)
				}
				onlyLastConsumer(t, ctx, ajs, stream.SnapshotStreamName(source), cname)
				// A restore resumed after the table message: the rest of
				// the snapshot, then the outline up to there (loadTables).
				md, err := msgs[1].Metadata()
				if err != nil {
					t.Fatal(err)
				}
				rest, restName := readSnapshot(t, call(t), snap, jetstream.OrderedConsumerConfig{
					FilterSubjects: []string{stream.SnapshotSubject(source, id) + ".>"},
					DeliverPolicy:  jetstream.DeliverByStartSequencePolicy, OptStartSeq: md.Sequence.Stream + 1})
				if got, want := snapKinds(rest), "data table-end end"; got != want {
					t.Errorf("snapshot %s resumed as %s: %s, want %s", id, who, got, want)
				}
				onlyLastConsumer(t, ctx, ajs, stream.SnapshotStreamName(source), restName)
				outline, outlineName := readSnapshot(t, call(t), snap, jetstream.OrderedConsumerConfig{
					FilterSubjects: []string{stream.SnapshotSubject(source, id) + ".m"}})
				if got, want := snapKinds(outline), "begin table table-end end"; got != want {
					t.Errorf("outline of snapshot %s read as %s: %s, want %s", id, who, got, want)
				}
				onlyLastConsumer(t, ctx, ajs, stream.SnapshotStreamName(source), outlineName)
				// SeekLSN on the change stream's mirror: the transaction
				// at 0/30 (seq 3) follows the heartbeat (seq 2, 0/20).
				for lsn, want := range map[stream.LSN]uint64{0x10: 1, 0x30: 3} {
					seq, err := stream.SeekLSN(call(t), st, lsn)
					if err != nil {
						t.Fatalf("SeekLSN(%s) as %s: %v", lsn, who, err)
					}
					if seq != want {
						t.Errorf("SeekLSN(%s) as %s = %d, want %d", lsn, who, seq, want)
					}
				}
				noViolation(t, who, errs)
			}

			otherRegion := map[string]string{"r1": "r2", "r2": "r1"}[region]
			for _, subj := range []string{
				"pgjet.app.tx", // inject changes
				"pgjet.other.tx",
				"$JS.API.STREAM.DELETE.PGJET_app",
				"$JS.API.STREAM.PURGE.PGJET_app",
				"$JS.API.STREAM.UPDATE.PGJET_app",
				"$JS.API.STREAM.CREATE.PGJET_other",
				"$JS.API.STREAM.MSG.DELETE.PGJET_app",
				"$JS.API.CONSUMER.CREATE.PGJET_app.pgjet_apply_" + otherRegion,
				"$JS.API.CONSUMER.DELETE.PGJET_app.pgjet_apply_" + otherRegion,
				"$JS.API.CONSUMER.MSG.NEXT.PGJET_app.pgjet_apply_" + otherRegion,
				"$JS.API.CONSUMER.CREATE.PGJET_other.pgjet_apply_" + region,
				"$JS.ACK.PGJET_app.pgjet_apply_" + otherRegion + ".1.1.1.1.0",
				"$JS.hub.API.STREAM.INFO.PGJET_app", // the hub's JetStream
				"$JS.hub.API.CONSUMER.CREATE.PGJET_app.pgjet_apply_" + region,
				"pgjetsnap.app.x.m", // inject snapshots
				"pgjetsnap.app.x.d",
				"$JS.API.STREAM.PURGE.PGJET_SNAP_app",
				"$JS.API.STREAM.DELETE.PGJET_SNAP_app",
				"$JS.API.STREAM.UPDATE.PGJET_SNAP_app",
				"$JS.API.STREAM.MSG.DELETE.PGJET_SNAP_app",
				"$JS.API.STREAM.CREATE.PGJET_SNAP_other",
				"$JS.API.STREAM.MSG.GET.PGJET_SNAP_other",
				"$JS.API.STREAM.MSG.GET.PGJET_other",
				"$JS.API.DIRECT.GET.PGJET_SNAP_app",
				"$JS.API.CONSUMER.CREATE.PGJET_SNAP_app.reader", // unfiltered
				"$JS.API.CONSUMER.DURABLE.CREATE.PGJET_SNAP_app.reader",
				"$JS.API.CONSUMER.CREATE.PGJET_SNAP_other.reader.pgjetsnap.other.x.>",
				"$JS.API.CONSUMER.CREATE.PGJET_app.reader.pgjet.app.tx",
				"$JS.hub.API.STREAM.MSG.GET.PGJET_SNAP_app",
				apply.DeadLetterSubject(source, otherRegion),
				"$JS.API.STREAM.CREATE." + apply.DeadLetterStream(source, otherRegion),
				"$JS.API.STREAM.PURGE." + apply.DeadLetterStream(source, region),
			} {
				deniedPublish(t, nc, errs, subj)
			}
			deniedSubscribe(t, nc, errs, "pgjet.app.>")
			deniedSubscribe(t, nc, errs, "pgjetsnap.app.>")
		})
	}
	if t.Failed() {
		return
	}

	t.Run("capture without STREAM.CREATE and UPDATE", func(t *testing.T) {
		// The streams exist (made above, as an admin would): a capture
		// start only looks them up.
		nc, errs := permConnect(t, urls["hub"], "pgjet_capture_app_tight", "PGJET_CAPTURE_APP_PASSWORD")
		js, err := stream.NewJetStream(nc, "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.EnsureStream(call(t), js, source, stream.StreamOptions{MaxAge: time.Hour, Duplicates: time.Minute}); err != nil {
			t.Fatalf("EnsureStream as pgjet_capture_app_tight: %v", err)
		}
		if _, err := stream.EnsureSnapshotStream(call(t), js, source, 1); err != nil {
			t.Fatalf("EnsureSnapshotStream as pgjet_capture_app_tight: %v", err)
		}
		if _, err := js.Publish(call(t), stream.HeartbeatSubject(source), []byte("hb")); err != nil {
			t.Fatalf("publish as pgjet_capture_app_tight: %v", err)
		}
		noViolation(t, "pgjet_capture_app_tight", errs)
		for _, subj := range []string{
			"$JS.API.STREAM.CREATE.PGJET_app", "$JS.API.STREAM.UPDATE.PGJET_app",
			"$JS.API.STREAM.CREATE.PGJET_SNAP_app", "$JS.API.STREAM.UPDATE.PGJET_SNAP_app",
		} {
			deniedPublish(t, nc, errs, subj)
		}
	})

	t.Run("apply r1 without STREAM.CREATE", func(t *testing.T) {
		// The mirrors and the dead-letter stream exist (made above, as an
		// admin would): an applier start only looks them up.
		nc, errs := permConnect(t, urls["r1"], "pgjet_apply_app_r1_tight", "PGJET_APPLY_APP_R1_PASSWORD")
		js, err := stream.NewJetStream(nc, "")
		if err != nil {
			t.Fatal(err)
		}
		st, err := stream.EnsureMirror(call(t), js, source, "hub", stream.MirrorLimits{MaxAge: time.Hour})
		if err != nil {
			t.Fatalf("EnsureMirror as pgjet_apply_app_r1_tight: %v", err)
		}
		if _, err := stream.EnsureSnapshotMirror(call(t), js, source, "hub"); err != nil {
			t.Fatalf("EnsureSnapshotMirror as pgjet_apply_app_r1_tight: %v", err)
		}
		if err := apply.EnsureDeadLetters(call(t), js, source, "r1"); err != nil {
			t.Fatalf("EnsureDeadLetters as pgjet_apply_app_r1_tight: %v", err)
		}
		if _, err := st.GetMsg(call(t), 1); err != nil {
			t.Fatalf("read the mirror as pgjet_apply_app_r1_tight: %v", err)
		}
		noViolation(t, "pgjet_apply_app_r1_tight", errs)
		for _, subj := range []string{
			"$JS.API.STREAM.CREATE.PGJET_app", "$JS.API.STREAM.CREATE.PGJET_SNAP_app", "$JS.API.STREAM.CREATE.PGJET_DLQ_app_r1",
		} {
			deniedPublish(t, nc, errs, subj)
		}
	})

	// nats-server checks a JetStream API request's subject, which names
	// the stream, never the config it carries. A user allowed to create
	// or update its own stream may therefore point it at another source's
	// stream and read that through its own. This checks the exposure the
	// README's Security model states, so that a nats-server that starts
	// to refuse it makes the test fail and the README be revised.
	t.Run("stream configs", func(t *testing.T) {
		ajs, err := jetstream.New(admin["hub"])
		if err != nil {
			t.Fatal(err)
		}
		const secret = "a row of source other"
		if _, err := ajs.Publish(ctx, stream.TxnSubject("other"), []byte(secret)); err != nil {
			t.Fatal(err)
		}
		readOther := func(t *testing.T, who string, st jetstream.Stream) {
			t.Helper()
			eventually(t, 20*time.Second, who+" reads source other's message through "+st.CachedInfo().Config.Name, func() (bool, error) {
				info, err := st.Info(call(t), jetstream.WithSubjectFilter(stream.TxnSubject("other")))
				if err != nil {
					return false, err
				}
				if info.State.Msgs == 0 {
					return false, fmt.Errorf("no message of source other yet")
				}
				m, err := st.GetLastMsgForSubject(call(t), stream.TxnSubject("other"))
				if err != nil {
					return false, err
				}
				return string(m.Data) == secret, fmt.Errorf("read %q", m.Data)
			})
		}

		t.Run("capture adds another source's stream as a source", func(t *testing.T) {
			nc, errs := permConnect(t, urls["hub"], "pgjet_capture_app", "PGJET_CAPTURE_APP_PASSWORD")
			js, err := stream.NewJetStream(nc, "")
			if err != nil {
				t.Fatal(err)
			}
			st, err := js.Stream(call(t), stream.StreamName(source))
			if err != nil {
				t.Fatal(err)
			}
			cfg := st.CachedInfo().Config
			cfg.Sources = []*jetstream.StreamSource{{Name: stream.StreamName("other")}}
			if st, err = js.UpdateStream(call(t), cfg); err != nil {
				t.Fatalf("STREAM.UPDATE.PGJET_app adding PGJET_other as a source: %v; if nats-server now refuses this, revise the README's Security model", err)
			}
			readOther(t, "pgjet_capture_app", st)
			noViolation(t, "pgjet_capture_app", errs)
			// pgjet-capture puts its own config back at its next start.
			if _, err := stream.EnsureStream(call(t), js, source, stream.StreamOptions{MaxAge: time.Hour, Duplicates: time.Minute}); err != nil {
				t.Fatal(err)
			}
			if st, err = js.Stream(call(t), stream.StreamName(source)); err != nil {
				t.Fatal(err)
			}
			if got := st.CachedInfo().Config.Sources; len(got) != 0 {
				t.Errorf("after EnsureStream, PGJET_app still sources %v", got)
			}
		})

		t.Run("apply mirrors another source's stream", func(t *testing.T) {
			// As before the real mirror exists (admin deletes it here).
			ar1, err := jetstream.New(admin["r1"])
			if err != nil {
				t.Fatal(err)
			}
			if err := ar1.DeleteStream(ctx, stream.StreamName(source)); err != nil {
				t.Fatal(err)
			}
			nc, errs := permConnect(t, urls["r1"], "pgjet_apply_app_r1", "PGJET_APPLY_APP_R1_PASSWORD")
			js, err := stream.NewJetStream(nc, "")
			if err != nil {
				t.Fatal(err)
			}
			st, err := js.CreateStream(call(t), jetstream.StreamConfig{
				Name:   stream.StreamName(source),
				Mirror: &jetstream.StreamSource{Name: stream.StreamName("other"), Domain: "hub"},
			})
			if err != nil {
				t.Fatalf("STREAM.CREATE.PGJET_app as a mirror of PGJET_other: %v; if nats-server now refuses this, revise the README's Security model", err)
			}
			readOther(t, "pgjet_apply_app_r1", st)
			noViolation(t, "pgjet_apply_app_r1", errs)
			// pgjet-apply refuses such a mirror rather than apply another
			// source's changes.
			_, err = stream.EnsureMirror(call(t), js, source, "hub", stream.MirrorLimits{})
			if err == nil || !strings.Contains(err.Error(), "PGJET_other") {
				t.Errorf("EnsureMirror on a mirror of PGJET_other: err = %v, want one naming it", err)
			}
		})
	})
}

// tightUser adds to o a user named name with the permissions of user from,
// less the publish subjects drop (each must be among them).
func tightUser(t *testing.T, o *server.Options, from, name string, drop ...string) {
	t.Helper()
	for _, u := range o.Users {
		if u.Username != from {
			continue
		}
		p := *u.Permissions
		pub := *p.Publish
		pub.Allow = nil
		for _, s := range u.Permissions.Publish.Allow {
			if !slices.Contains(drop, s) {
				pub.Allow = append(pub.Allow, s)
			}
		}
		if got, want := len(pub.Allow), len(u.Permissions.Publish.Allow)-len(drop); got != want {
			t.Fatalf("user %s lacks some of %v", from, drop)
		}
		p.Publish = &pub
		o.Users = append(o.Users, &server.User{Username: name, Password: u.Password, Permissions: &p})
		return
	}
	t.Fatalf("no user %s", from)
}

// loadWithPermissions parses deploy/nats/<name>.conf with
// `include "permissions-<name>.conf"` added at its end, as the permission
// files say to, from copies of both files.
func loadWithPermissions(t *testing.T, name string) *server.Options {
	t.Helper()
	dir := t.TempDir()
	perm := "permissions-" + name + ".conf"
	base, err := os.ReadFile(filepath.Join(natsConfDir, name+".conf"))
	if err != nil {
		t.Fatal(err)
	}
	inc, err := os.ReadFile(filepath.Join(natsConfDir, perm))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, perm), inc, 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, name+".conf")
	if err := os.WriteFile(conf, fmt.Appendf(base, "\ninclude %q\n", perm), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("parse %s.conf with %s included: %v", name, perm, err)
	}
	return o
}

// runPermissioned starts the server of o on local ports; the hub listens
// for leafnodes on leafPort, and regions dial it as user leaf.
func runPermissioned(t *testing.T, name string, o *server.Options, leafPort int, leafPW string) *server.Server {
	t.Helper()
	o.Host, o.Port, o.HTTPPort = "127.0.0.1", server.RANDOM_PORT, 0
	o.StoreDir, o.NoSigs = t.TempDir(), true
	if o.LeafNode.Port != 0 {
		o.LeafNode.Host, o.LeafNode.Port = "127.0.0.1", leafPort
	}
	for _, rm := range o.LeafNode.Remotes {
		rm.URLs = []*url.URL{{Scheme: "nats-leaf", User: url.UserPassword("leaf", leafPW), Host: fmt.Sprintf("127.0.0.1:%d", leafPort)}}
	}
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatalf("configure %s: %v", name, err)
	}
	s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(natsReadyTimeout) {
		t.Fatalf("%s not ready", name)
	}
	return s
}

// permConnect connects as user with the password in permPasswords[pwVar];
// the channel receives the connection's asynchronous errors, among them
// permissions violations.
func permConnect(t *testing.T, u, user, pwVar string) (*nats.Conn, chan error) {
	t.Helper()
	errs := make(chan error, 64)
	nc, err := nats.Connect(u, nats.UserInfo(user, permPasswords[pwVar]),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}))
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc, errs
}

// noViolation fails if the server reported a permissions violation to who.
func noViolation(t *testing.T, who string, errs chan error) {
	t.Helper()
	for {
		select {
		case err := <-errs:
			if errors.Is(err, nats.ErrPermissionViolation) {
				t.Errorf("%s: %v", who, err)
			}
		default:
			return
		}
	}
}

// deniedPublish publishes to subj and waits for the server's permissions
// violation naming it.
func deniedPublish(t *testing.T, nc *nats.Conn, errs chan error, subj string) {
	t.Helper()
	if err := nc.Publish(subj, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	awaitViolation(t, errs, fmt.Sprintf("Publish to %q", subj))
}

// deniedSubscribe subscribes to subj and waits for the server's
// permissions violation naming it.
func deniedSubscribe(t *testing.T, nc *nats.Conn, errs chan error, subj string) {
	t.Helper()
	sub, err := nc.SubscribeSync(subj)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	awaitViolation(t, errs, fmt.Sprintf("Subscription to %q", subj))
}

func awaitViolation(t *testing.T, errs chan error, what string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case err := <-errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), what) {
				return
			}
		case <-timeout:
			t.Errorf("%s: allowed, want a permissions violation", what)
			return
		}
	}
}

// snapshotMeta is an outline message of a snapshot, as
// (*snapshotter).meta in capture/snapshot.go makes it.
func snapshotMeta(source, id, kind, msgID string, data []byte) *nats.Msg {
	return stream.SnapshotMsg(stream.SnapshotOutlineSubject(source, id), id, kind, msgID, data)
}

// publishSnapshot publishes, as capture/snapshot.go does, snapshot id of
// one table with two rows; complete adds its end message.
func publishSnapshot(t *testing.T, ctx context.Context, js jetstream.JetStream, source, id string, lsn stream.LSN, complete bool) {
	t.Helper()
	tbl := stream.SnapshotTable{Schema: "public", Name: "t", Columns: []string{"id", "v"}, LSN: lsn}
	man := stream.SnapshotManifest{Version: stream.SnapshotVersion, Source: source, ID: id, LSN: lsn,
		Started: time.Now().UTC(), Tables: []stream.SnapshotTable{tbl}}
	js1 := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	rows := stream.SnapshotMsg(stream.SnapshotRowsSubject(source, id), id, stream.SnapData, fmt.Sprintf("data:%s:%s:0:0", tbl.Key(), lsn), []byte("1\tone\n2\ttwo\n"))
	rows.Header.Set(stream.SnapSchemaHeader, tbl.Schema)
	rows.Header.Set(stream.SnapTableHeader, tbl.Name)
	rows.Header.Set(stream.SnapRangeHeader, "0")
	msgs := []*nats.Msg{
		snapshotMeta(source, id, stream.SnapBegin, "begin", js1(man)),
		snapshotMeta(source, id, stream.SnapTable, "table:"+tbl.Key()+":"+lsn.String(), js1(tbl)),
		rows,
	}
	tbl.Rows, tbl.Bytes = 2, 12
	msgs = append(msgs, snapshotMeta(source, id, stream.SnapTableEnd, "table-end:"+tbl.Key()+":"+lsn.String(), js1(tbl)))
	if complete {
		man.Finished, man.Rows, man.Bytes = time.Now().UTC(), 2, 12
		msgs = append(msgs, snapshotMeta(source, id, stream.SnapEnd, "end", js1(man)))
	}
	for _, m := range msgs {
		ack, err := js.PublishMsg(ctx, m)
		if err != nil {
			t.Fatalf("publish %s (%s) of snapshot %s: %v", m.Subject, m.Header.Get(stream.SnapKindHeader), id, err)
		}
		if ack.Stream != stream.SnapshotStreamName(source) {
			t.Fatalf("snapshot message stored in stream %s, want %s", ack.Stream, stream.SnapshotStreamName(source))
		}
	}
}

// wantSnaps checks a listing: ids, in order, every one complete but the
// newest.
func wantSnaps(t *testing.T, snaps []stream.SnapshotInfo, ids []string) {
	t.Helper()
	var got, want []string
	for _, s := range snaps {
		got = append(got, fmt.Sprintf("%s complete=%v", s.ID, s.Complete))
	}
	for i, id := range ids {
		want = append(want, fmt.Sprintf("%s complete=%v", id, i < len(ids)-1))
	}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Errorf("snapshots listed: %v, want %v", got, want)
	}
}

// readOutline reads the outline of snapshot id as readSnapshotMeta in
// capture/snapshot.go does: an ordered consumer, its info, then one Next
// per pending message. It returns the name of the consumer left.
func readOutline(t *testing.T, ctx context.Context, st jetstream.Stream, source, id string) (stream.SnapshotManifest, map[string]stream.SnapshotTable, string) {
	t.Helper()
	var man stream.SnapshotManifest
	done := map[string]stream.SnapshotTable{}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{stream.SnapshotSubject(source, id) + ".m"}})
	if err != nil {
		t.Fatalf("ordered consumer on the outline of snapshot %s: %v", id, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatalf("ordered consumer info: %v", err)
	}
	for n := info.NumPending; n > 0; n-- {
		m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("read the outline of snapshot %s: %v", id, err)
		}
		switch m.Headers().Get(stream.SnapKindHeader) {
		case stream.SnapBegin:
			if err := json.Unmarshal(m.Data(), &man); err != nil {
				t.Fatal(err)
			}
		case stream.SnapTableEnd:
			var tbl stream.SnapshotTable
			if err := json.Unmarshal(m.Data(), &tbl); err != nil {
				t.Fatal(err)
			}
			done[tbl.Key()] = tbl
		}
	}
	return man, done, cons.CachedInfo().Name
}

// readSnapshot reads a snapshot through an ordered consumer as Restore in
// apply/restore.go does, one Next at a time, until the end message. It
// returns the messages and the name of the consumer left.
func readSnapshot(t *testing.T, ctx context.Context, st jetstream.Stream, cc jetstream.OrderedConsumerConfig) ([]jetstream.Msg, string) {
	t.Helper()
	cons, err := st.OrderedConsumer(ctx, cc)
	if err != nil {
		t.Fatalf("ordered consumer on %v: %v", cc.FilterSubjects, err)
	}
	var msgs []jetstream.Msg
	for {
		m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("read %v after %d messages: %v", cc.FilterSubjects, len(msgs), err)
		}
		msgs = append(msgs, m)
		if m.Headers().Get(stream.SnapKindHeader) == stream.SnapEnd {
			return msgs, cons.CachedInfo().Name
		}
	}
}

func snapKinds(msgs []jetstream.Msg) string {
	var k []string
	for _, m := range msgs {
		k = append(k, m.Headers().Get(stream.SnapKindHeader))
	}
	return strings.Join(k, " ")
}

// onlyLastConsumer waits until the ordered consumer whose current consumer
// is name has deleted its earlier ones: nats.go deletes each when it makes
// the next, so the restricted user's CONSUMER.DELETE ran and was allowed.
func onlyLastConsumer(t *testing.T, ctx context.Context, adminJS jetstream.JetStream, streamName, name string) {
	t.Helper()
	prefix := name[:strings.LastIndexByte(name, '_')+1]
	eventually(t, 15*time.Second, "the ordered consumer "+prefix+"* deleted its earlier consumers", func() (bool, error) {
		st, err := adminJS.Stream(ctx, streamName)
		if err != nil {
			return false, err
		}
		var left []string
		names := st.ConsumerNames(ctx)
		for n := range names.Name() {
			if strings.HasPrefix(n, prefix) {
				left = append(left, n)
			}
		}
		if err := names.Err(); err != nil {
			return false, err
		}
		return len(left) == 1 && left[0] == name, fmt.Errorf("consumers %v left, want only %s", left, name)
	})
}
