// Package protocol is Varve's Kafka wire-protocol TCP server. It frames, parses
// and version-checks requests, hands them decoded to a Handler, and writes the
// responses back in request order. It has no business logic: it does not know
// what a topic, a partition or a group is, and it imports nothing else of
// Varve's (deps_test.go holds that line).
//
// # What it does
//
//   - Framing: every request is a 4-byte big-endian size followed by that many
//     bytes. A size below 8 (too small for api key, version and correlation
//     id), above Config.MaxRequestBytes, or negative closes the connection
//     before anything is allocated for it. Bodies above 1 MiB are read in
//     chunks whose buffer grows with the bytes that actually arrived, so a
//     client that announces 100 MiB and sends nothing costs 1 MiB, not 100.
//   - Request header: api key, api version, correlation id, nullable client id
//     (absent only for ControlledShutdown v0, request header v0), and a
//     tagged-field section when the request version is flexible (header v2).
//     kmsg.RequestForKey decodes the body at the request version.
//   - Version negotiation: the broker passes its version table as
//     Config.Versions, the one source of truth shared with its ApiVersions
//     handler. A key the table (or kmsg) does not know, or a version outside
//     the table's range, closes the connection, as Kafka does, since the body
//     cannot be parsed. The one exception is ApiVersions (KIP-511): a client
//     newer than the broker sends a version the broker does not know, and gets
//     a v0 ApiVersionsResponse with UNSUPPORTED_VERSION and the table's key
//     list, on a connection that stays open, so it can retry at a version both
//     sides understand. The server builds that answer itself; the Handler never
//     sees the request.
//   - Responses: size, correlation id, an empty tagged-field section when the
//     response version is flexible (response header v1), then the body. The
//     ApiVersions response always uses response header v0, whatever its
//     version, because a client parses it before it knows what the broker
//     supports. The response version is forced to the request version.
//
// # Goroutines and ordering
//
// Each connection has exactly two goroutines. The read goroutine reads a
// frame, parses it, calls Handler.Handle and queues the response; it calls
// Handle for one request at a time, in arrival order, so responses come out in
// request order without any reordering buffer. That is also Kafka's model: a
// long-poll Fetch delays the requests pipelined behind it on the same
// connection, and clients that care open separate connections. The write
// goroutine encodes queued responses into one reused buffer, coalescing the
// ones already waiting into a single write. Between them sits a channel of
// Config.MaxInFlight responses; when it is full the read goroutine stops
// reading, so a client that pipelines without reading its responses is pushed
// back through TCP instead of growing the server's memory.
//
// Every goroutine (each Serve call and the two per connection) is added to
// one WaitGroup under the server lock, which refuses once Shutdown has begun,
// and Shutdown waits for all of them.
//
// # Deadlines and limits
//
//   - Config.IdleTimeout bounds the wait for the first byte of the next frame;
//     time spent inside Handle does not count, so a long poll is never "idle".
//     The same bound applies to each write, so a client that stops reading its
//     responses is eventually dropped.
//   - Config.FrameTimeout bounds the time to receive the rest of a frame once
//     its first byte has arrived (slow-loris protection).
//   - Config.MaxConnections and Config.MaxConnectionsPerIP cap the open
//     connections in total and per client IP address; a connection over
//     either is closed as soon as it is accepted, before anything is read or
//     allocated for it, and the refusals are logged at most once a second
//     with a count. Servers given one shared Config.Conns (a ConnLimits)
//     share its caps: the broker's listeners together, as in Kafka.
//   - Config.MaxPartitionsPerRequest caps the partitions a decoded request
//     names (every entry of every Partitions list, or each topic of a list
//     of topics that names no partitions); a request over it closes the
//     connection before the Handler sees it.
//   - Config.QueuedMaxRequestBytes (or a RequestBudget shared through
//     Config.Requests) bounds the frame bytes held at once by all
//     connections: a frame's buffer is reserved as it grows with the bytes
//     received, and released once the request has been handled; a
//     connection that does not fit stops reading until it does, and a
//     partial frame waits at most until its FrameTimeout.
//   - A decoded request may hold up to Config.MaxRequestBytes of frame plus
//     what kmsg allocates for it. kmsg refuses an array longer than the
//     bytes left could encode, so that is a constant factor of the frame
//     size, but not a small one: a Produce partition with no records is 6
//     bytes on the wire and a 40-byte struct, so a request can take about
//     seven times its size while decoded, and it is decoded whole before
//     MaxPartitionsPerRequest can count its partitions (measured in the
//     integration test of hostile requests).
//
// # Errors and shutdown
//
// A Handler error closes its connection after the responses queued before it
// are written: Kafka's way of telling an acks=0 producer that something went
// wrong. A panic in Handle is recovered and logged with its stack, and closes
// only that connection. Shutdown stops accepting, lets every connection finish
// the request whose frame it has fully read (the Handler's context stays live
// for it), writes the queued responses and closes; when its context expires it
// cancels the Handler contexts and closes every socket, then still waits for
// the goroutines to exit.
package protocol
