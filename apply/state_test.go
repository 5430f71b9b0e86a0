package apply

import (
	"errors"
	"strings"
	"testing"
)

func TestErrorLine(t *testing.T) {
	db := "postgres://pgjet:s3cret@replica:5432/app"
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, ""},
		{"folded", errors.New("stop\n  at seq 4\tnow"), "stop at seq 4 now"},
		{"db secret", errors.New("connect " + db + ": refused"), "connect postgres://pgjet:xxxxx@replica:5432/app: refused"},
		{"other secret", errors.New("nats://u:pw@hub:4222 failed; password=hunter2"), "nats://u:xxxxx@hub:4222 failed; password=xxxxx"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ErrorLine(tc.err, db); got != tc.want {
				t.Errorf("ErrorLine = %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("long", func(t *testing.T) {
		got := ErrorLine(errors.New(strings.Repeat("é", maxErrorLine)), db)
		if len(got) > maxErrorLine+len("…") || !strings.HasSuffix(got, "…") || !strings.HasPrefix(got, "é") {
			t.Errorf("ErrorLine of a long message = %d bytes ending %q, want at most %d ending with …", len(got), got[len(got)-8:], maxErrorLine+len("…"))
		}
		if strings.ContainsRune(got, '\uFFFD') {
			t.Errorf("ErrorLine cut inside a UTF-8 sequence")
		}
	})
}
