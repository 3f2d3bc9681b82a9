// Debounce for path updates, the same policy as the Android glue's Debouncer (which is unit-tested
// on the JVM). Not compiled on the project's build machine (no Swift there).

import Foundation

/// Coalesces bursts of `NWPathMonitor` updates (they come up to about ten per second).
///
/// `update` marks the state changed; the action runs once updates have been quiet for `window`,
/// or at the latest `maxWait` after the first unapplied update; `window` after that it runs once
/// more (the trailing re-apply) unless new updates came meanwhile. A burst of N updates within
/// the window therefore gives two runs. Confined to `queue`: call every method on it.
final class PathDebouncer {
    private let queue: DispatchQueue
    private let window: TimeInterval
    private let maxWait: TimeInterval
    private let action: () -> Void
    private var firstPending: DispatchTime?
    private var timer: DispatchWorkItem?

    init(queue: DispatchQueue, window: TimeInterval, maxWait: TimeInterval, action: @escaping () -> Void) {
        self.queue = queue
        self.window = window
        self.maxWait = max(maxWait, window)
        self.action = action
    }

    /// Something changed: (re)starts the quiet-period timer.
    func update() {
        let now = DispatchTime.now()
        let first = firstPending ?? now
        firstPending = first
        arm(at: min(now + window, first + maxWait), reapply: false)
    }

    /// Drops pending runs.
    func cancel() {
        timer?.cancel()
        timer = nil
        firstPending = nil
    }

    private func arm(at deadline: DispatchTime, reapply: Bool) {
        timer?.cancel()
        let item = DispatchWorkItem { [weak self] in self?.fire(reapply: reapply) }
        timer = item
        queue.asyncAfter(deadline: deadline, execute: item)
    }

    private func fire(reapply: Bool) {
        timer = nil
        if !reapply {
            firstPending = nil
            arm(at: .now() + window, reapply: true)
        }
        action()
    }
}
