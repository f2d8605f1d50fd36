package vault

// The byte budget of uncommitted data. Open files' dirty chunks and the
// write-back cache's pending values share it: up to the flush threshold
// writes only fill memory; past it a background write-out commits
// completely filled chunks first (a sequential writer will not touch
// them again), then pending values, then everything, while writers go on
// filling the rest of the budget; a writer that would exceed the budget
// waits for the write-out. Ingesting data and writing it to disk thus
// overlap, and a copy of any size needs no more memory than the budget.

// limits returns the bytes in use, the threshold that starts a write-out
// and the budget. c.mu must be held.
func (c *writeCache) limitsLocked() (used, threshold, limit int64) {
	used = c.valueBytes + c.dirtyBytes
	if c.enabled {
		return used, c.threshold, c.capBytes
	}
	return used, defaultFileBudget / 2, defaultFileBudget
}

// addDirty accounts for delta bytes of dirty chunks, waking writers
// waiting for room when bytes are freed.
func (c *writeCache) addDirty(delta int64) {
	c.mu.Lock()
	c.dirtyBytes += delta
	if delta < 0 {
		c.room.Broadcast()
	}
	c.mu.Unlock()
}

// reserve makes room for n new dirty chunks of oi before a write adds
// them, starting a background write-out past the threshold and waiting
// for it at the budget. A write-out that fails keeps the data dirty and
// leaves its error with the inode it could not commit (takeOutErr), for
// that file's writers; a writer is let through over the budget when the
// last write-out could free nothing, so that no writer waits for good.
func (c *writeCache) reserve(v *Vault, oi *openInode, n int64) error {
	need := n * oi.cs
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		used, threshold, limit := c.limitsLocked()
		if used+need > threshold && !c.outRunning {
			if c.outStuck && used+need > limit {
				c.outStuck = false
				return nil // nothing could be freed (one write bigger than the budget, or failing commits): let it through
			}
			c.outRunning, c.outStuck = true, false
			go c.writeOut(v)
		}
		if used+need <= limit {
			return nil
		}
		c.room.Wait()
	}
}

// writeOut commits pending data until usage is back under half the
// threshold, or nothing more can be committed.
func (c *writeCache) writeOut(v *Vault) {
	progress := true
	for progress {
		c.mu.Lock()
		used, threshold, _ := c.limitsLocked()
		c.mu.Unlock()
		if used <= threshold/2 {
			break
		}
		progress = v.writeOutStep()
	}
	c.mu.Lock()
	c.outRunning, c.outStuck = false, !progress
	c.room.Broadcast()
	c.mu.Unlock()
}

// writeOutStep commits one kind of pending data, in order of preference,
// and reports whether it committed anything. An open inode that fails to
// commit keeps its data and the error (see takeOutErr); pending values
// that fail stay pending, and the next FlushCache or Close reports why.
func (v *Vault) writeOutStep() bool {
	if v.closed.Load() {
		return false
	}
	for _, fullOnly := range []bool{true, false} {
		if !fullOnly {
			if n, _ := v.FlushCache(); n > 0 {
				return true
			}
		}
		committed := 0
		for _, oi := range v.files.all() {
			n, err := oi.commit(v, fullOnly)
			if err != nil {
				oi.mu.Lock()
				oi.outErr = err
				oi.mu.Unlock()
			}
			committed += n
		}
		if committed > 0 {
			return true
		}
	}
	return false
}

// waitWriteOut waits until no background write-out runs.
func (c *writeCache) waitWriteOut() {
	c.mu.Lock()
	for c.outRunning {
		c.room.Wait()
	}
	c.mu.Unlock()
}
