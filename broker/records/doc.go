// Package records looks inside v2 record batches: the one place where the
// broker decompresses and decodes records. The partition log stores batches
// as opaque bytes and never does this.
//
// # What is checked, and why here
//
// partition.ValidateBatch checks a batch's framing, CRC and header counts
// without decompressing. Check does the rest, once, when a batch is
// produced and before it is proposed to Raft, so that nothing a client sends
// can make a later reader (a consumer, ListOffsets, retention) trip over it.
// The stored bytes stay exactly as the client sent them: Check only reads.
// Where Kafka's LogValidator repairs a batch by rebuilding it (inner offsets
// that are not 0..n-1, a wrong maxTimestamp), Check refuses instead, because
// Varve never re-encodes a client's records. Every mainstream client
// (franz-go, librdkafka, Sarama, the Java client, kafka-python, kafka-go)
// writes batches that pass.
//
// A record, after decompression, is (Kafka's DefaultRecord):
//
//	length         varint  bytes that follow, up to the end of the headers
//	attributes     int8    unused
//	timestampDelta varlong from the batch's baseTimestamp
//	offsetDelta    varint  from the batch's baseOffset
//	keyLength      varint  -1 = null key
//	key            bytes
//	valueLength    varint  -1 = null value
//	value          bytes
//	headerCount    varint
//	headers        headerCount × (keyLength varint >= 0, key, valueLength varint (-1 = null), value)
//
// Varints are zigzag encoded; varint fields hold an int32 (at most 5 bytes),
// varlong an int64 (at most 10 bytes).
//
// # Bounded work
//
// Nothing is allocated in proportion to a length the batch claims before the
// bytes behind it have been decoded. Compressed batches (but raw snappy,
// below) are decoded as a stream through a fixed 32 KiB window and never
// held whole; Check and FindTimestamp skip keys and values without copying
// them, and Records copies a streamed record's fields as they are decoded. The decompressed size is capped
// (Limits.MaxDecompressedBytes) and so is the record count
// (Limits.MaxRecords), both answered with partition.ErrMessageTooLarge:
// MESSAGE_TOO_LARGE makes the Java producer split the batch and retry, which
// is what a legitimate but highly compressible batch needs. What one check
// may hold besides the window, whatever the batch:
//
//   - gzip: the inflater's state, under 64 KiB;
//   - lz4: one frame block, at most 4 MiB (the largest the frame format has;
//     franz-go writes 4 MiB blocks, Java and librdkafka 64 KiB), pooled;
//   - zstd: the frame's window, refused above 8 MiB (windowLog 23, what
//     zstd levels up to 19 use; only the "ultra" levels 20-22 of the Java
//     client and librdkafka need more);
//   - snappy: a raw snappy block must be decoded whole (back-references may
//     reach anywhere in it), so its claimed decoded length is first checked
//     against the limit and against 22 times the compressed size, the most
//     valid snappy can expand; xerial-framed snappy (the Java client's
//     "\x82SNAPPY\x00" framing) is decoded one chunk at a time under the
//     same bound per chunk.
//
// Only standard snappy is accepted, not s2's extensions: a batch labelled
// snappy that Java or librdkafka consumers could not decode is refused.
package records
