package capture

import (
	"fmt"
	"testing"

	"github.com/pgjet/pgjet/schema"
)

// TestSequenceParts: the values are split into JSON arrays under the
// bound, in order, each decodable, none lost.
func TestSequenceParts(t *testing.T) {
	var vals []schema.SequenceValue
	for i := range 300 {
		vals = append(vals, schema.SequenceValue{Schema: "public", Name: fmt.Sprintf("seq_%d", i), Value: int64(i)})
	}
	for _, max := range []int{1, 100, 1000, 1 << 20} {
		parts, err := sequenceParts(vals, max)
		if err != nil {
			t.Fatal(err)
		}
		var got []schema.SequenceValue
		for _, p := range parts {
			if len(parts) > 1 && len(p) > max && len(p) > 80 {
				t.Errorf("max %d: part of %d bytes", max, len(p))
			}
			vs, err := schema.ParseSequences([]byte(p))
			if err != nil {
				t.Fatalf("max %d: part %q: %v", max, p, err)
			}
			got = append(got, vs...)
		}
		if fmt.Sprint(got) != fmt.Sprint(vals) {
			t.Errorf("max %d: %d parts hold %d values, want the %d in order", max, len(parts), len(got), len(vals))
		}
	}
	if parts, _ := sequenceParts(vals[:0], 100); len(parts) != 1 || parts[0] != "[]" {
		t.Errorf("no values: parts %q", parts)
	}
}
