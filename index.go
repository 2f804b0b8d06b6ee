package coffer

// IndexBy maps each element of list by key, pointing into list: the
// records of a page by id, say, to look them up while walking another.
func IndexBy[T any](list []T, key func(*T) string) map[string]*T {
	out := make(map[string]*T, len(list))
	for i := range list {
		out[key(&list[i])] = &list[i]
	}
	return out
}
