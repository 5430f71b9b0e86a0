package main

import (
	"math"
	"testing"
)

func TestRoom(t *testing.T) {
	for _, c := range []struct{ lo, hi, want int64 }{
		{0, 10, 10},
		{5, 32767, 32762},
		{math.MinInt64 + 1, 5, math.MaxInt64},
		{-5, math.MaxInt64, math.MaxInt64},
		{7, 7, 0},
	} {
		if got := room(c.lo, c.hi); got != c.want {
			t.Errorf("room(%d, %d) = %d, want %d", c.lo, c.hi, got, c.want)
		}
	}
}
