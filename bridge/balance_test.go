package bridge

import (
	"slices"
	"testing"
)

func TestShareAddsUpAndStaysUnderCeil(t *testing.T) {
	for n := 1; n <= 16; n++ {
		for k := 1; k <= 6; k++ {
			sum := 0
			for pos := range k {
				s := share(n, k, pos)
				if s > (n+k-1)/k || s < n/k {
					t.Errorf("share(%d, %d, %d) = %d, outside floor..ceil", n, k, pos, s)
				}
				sum += s
			}
			if sum != n {
				t.Errorf("shares of %d shards over %d members add up to %d", n, k, sum)
			}
		}
	}
}

func TestPlan(t *testing.T) {
	const (
		I = shardIdle
		T = shardTaking
		O = shardOwned
		R = shardReleasing
	)
	free, held, silent := lockView{}, lockView{held: true}, lockView{held: true, silent: true}
	rep := func(n int, v lockView) []lockView { return slices.Repeat([]lockView{v}, n) }
	ticks := func(n, v int) []int { return slices.Repeat([]int{v}, n) }
	for _, tc := range []struct {
		name          string
		members       []member
		self          int
		states        []shardState
		locks         []lockView
		freeTicks     []int
		take, release []int
	}{
		{
			name:    "alone: takes every free shard",
			members: []member{{id: "a"}}, self: 0,
			states: []shardState{I, I, I, I}, locks: rep(4, free), freeTicks: ticks(4, 1),
			take: []int{0, 1, 2, 3},
		},
		{
			name:    "a second bridge joined: the first hands over its highest shards",
			members: []member{{id: "a", owned: 4}, {id: "b"}}, self: 0,
			states: []shardState{O, O, O, O}, locks: rep(4, held), freeTicks: ticks(4, 0),
			release: []int{3, 2},
		},
		{
			name:    "the joiner takes what was handed over",
			members: []member{{id: "a", owned: 2}, {id: "b"}}, self: 1,
			states: []shardState{I, I, I, I}, locks: []lockView{held, held, free, free}, freeTicks: []int{0, 0, 1, 1},
			take: []int{2, 3},
		},
		{
			name:    "the joiner waits while every shard is held",
			members: []member{{id: "a", owned: 4}, {id: "b"}}, self: 1,
			states: []shardState{I, I, I, I}, locks: rep(4, held), freeTicks: ticks(4, 0),
		},
		{
			name:    "at its share: nothing, free shards or not",
			members: []member{{id: "a", owned: 2}, {id: "b", owned: 0}}, self: 0,
			states: []shardState{O, O, I, I}, locks: []lockView{held, held, free, free}, freeTicks: []int{0, 0, 3, 3},
		},
		{
			name:    "a shard being handed over does not count",
			members: []member{{id: "a", owned: 3}, {id: "b"}}, self: 0,
			states: []shardState{O, O, R, R}, locks: rep(4, held), freeTicks: ticks(4, 0),
		},
		{
			name:    "a shard being taken counts",
			members: []member{{id: "a", owned: 1}, {id: "b"}}, self: 0,
			states: []shardState{O, T, I, I}, locks: []lockView{held, free, free, free}, freeTicks: []int{0, 0, 1, 1},
		},
		{
			name:    "a dead bridge's shards are dealt out in member order",
			members: []member{{id: "a", owned: 4}, {id: "b", owned: 4}}, self: 1,
			states: []shardState{I, I, I, I, O, O, O, O, I, I, I, I},
			locks:  append(rep(8, held), rep(4, free)...), freeTicks: append(ticks(8, 0), ticks(4, 1)...),
			take: []int{10, 11},
		},
		{
			name:    "the first member takes the first of them",
			members: []member{{id: "a", owned: 4}, {id: "b", owned: 4}}, self: 0,
			states: []shardState{O, O, O, O, I, I, I, I, I, I, I, I},
			locks:  append(rep(8, held), rep(4, free)...), freeTicks: append(ticks(8, 0), ticks(4, 1)...),
			take: []int{8, 9},
		},
		{
			name:    "a shard still free on a later tick goes to anyone below its share",
			members: []member{{id: "a", owned: 0}, {id: "b", owned: 1}}, self: 1,
			states: []shardState{I, O, I, I}, locks: []lockView{free, held, held, held}, freeTicks: []int{2, 0, 0, 0},
			take: []int{0},
		},
		{
			name:    "a shard held by a silent session is taken (evicted) when below the share",
			members: []member{{id: "a"}}, self: 0,
			states: []shardState{O, O, I, I}, locks: []lockView{held, held, silent, silent}, freeTicks: ticks(4, 0),
			take: []int{2, 3},
		},
		{
			name:    "free shards before silent ones",
			members: []member{{id: "a", owned: 2}, {id: "b", owned: 1}}, self: 1,
			states: []shardState{I, I, O, I}, locks: []lockView{held, silent, held, free}, freeTicks: []int{0, 0, 0, 1},
			take: []int{3},
		},
		{
			name:    "more bridges than shards: the later ones own nothing",
			members: []member{{id: "a", owned: 1}, {id: "b", owned: 1}, {id: "c"}}, self: 2,
			states: []shardState{I, I}, locks: []lockView{held, free}, freeTicks: []int{0, 5},
		},
		{
			name:    "four shards, three bridges: 2, 1, 1 by start order",
			members: []member{{id: "a", owned: 2}, {id: "b", owned: 2}, {id: "c"}}, self: 1,
			states: []shardState{I, I, O, O}, locks: rep(4, held), freeTicks: ticks(4, 0),
			release: []int{3},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			take, release := plan(tc.members, tc.self, tc.states, tc.locks, tc.freeTicks)
			if !slices.Equal(take, tc.take) || !slices.Equal(release, tc.release) {
				t.Errorf("plan = take %v, release %v; want take %v, release %v", take, release, tc.take, tc.release)
			}
		})
	}
}
