package coffer

import "testing"

func TestIndexBy(t *testing.T) {
	plans := []Plan{{ID: "a", Name: "one"}, {ID: "b", Name: "two"}}
	byID := IndexBy(plans, func(p *Plan) string { return p.ID })
	if len(byID) != 2 || byID["a"] != &plans[0] || byID["b"] != &plans[1] {
		t.Fatalf("IndexBy = %v, want pointers into the list by id", byID)
	}
	if got := IndexBy([]Plan(nil), func(p *Plan) string { return p.ID }); got == nil || len(got) != 0 {
		t.Errorf("IndexBy(nil) = %v, want an empty map", got)
	}
}
