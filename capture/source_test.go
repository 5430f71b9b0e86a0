package capture

import "testing"

func TestSwitchPoint(t *testing.T) {
	history := []byte("1\t0/3000158\tno recovery target specified\n\n2\t0/5000000\tat restore point \"x\"\n")
	for _, tc := range []struct {
		old  int32
		want int64
	}{
		{1, 0x3000158},
		{2, 0x5000000},
		{3, -1},
	} {
		got, err := switchPoint(history, tc.old)
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("switchPoint(timeline %d) = %X, want %X", tc.old, got, tc.want)
		}
	}
	if _, err := switchPoint([]byte("1\tzz\tbad\n"), 1); err == nil {
		t.Error("a bad switchpoint parsed without error")
	}
}
