import CPanzaSystem

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// The CPU the calling thread runs on, for spreading per-core state (counter stripes, inline
/// readers) so that two cores do not write the same cache line.
///
/// A hint, never a guarantee: the thread may move right after asking. Where the system cannot
/// tell, a mix of the thread's identity stands in (stable for the thread, spread across threads).
enum CurrentCPU {
    /// A small non-negative number that differs between the CPUs threads run on at the moment.
    @inline(__always)
    static var index: Int {
        let cpu = Int(cpanza_current_cpu())
        if cpu >= 0 { return cpu }
        let identity = UInt64(UInt(bitPattern: Int(bitPattern: pthread_self())))
        return Int(truncatingIfNeeded: (identity &* 0x9E37_79B9_7F4A_7C15) >> 58)
    }
}
