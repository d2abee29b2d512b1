package audit

// SetPreloadRows makes a read the records a Job wrote chunk by chunk for Jobs of more than n rows.
func SetPreloadRows(a *Auditor, n int) { a.preload = n }
