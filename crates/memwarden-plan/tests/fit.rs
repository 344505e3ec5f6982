//! The fit arithmetic's promises, over any input: never below 1, never above `want`, monotone
//! in free memory, and `swapping` exactly when one worker does not fit.

use memwarden_plan::fit::{FitRequest, compute_fit};
use proptest::prelude::*;

fn request() -> impl Strategy<Value = FitRequest> {
    (
        any::<u64>(),
        prop_oneof![Just(0u64), 0u64..1 << 40, any::<u64>()],
        prop_oneof![Just(0u64), 1u64..1 << 36, any::<u64>()],
        1u32..10_000,
        0.01f64..=1.0,
    )
        .prop_map(|(a, f, p, w, h)| FitRequest {
            available_bytes: a,
            fixed_bytes: f,
            per_worker_bytes: p,
            want: w,
            headroom: h,
        })
}

proptest! {
    #[test]
    fn bounded_by_one_and_want(r in request()) {
        let f = compute_fit(r).unwrap();
        prop_assert!(f.threads >= 1);
        prop_assert!(f.threads <= r.want);
        prop_assert_eq!(f.reduced, f.threads < r.want);
        prop_assert!(f.budget_bytes <= r.available_bytes);
    }

    #[test]
    fn monotone_in_free_memory(r in request(), more in any::<u64>()) {
        let bigger = FitRequest { available_bytes: r.available_bytes.saturating_add(more), ..r };
        let (a, b) = (compute_fit(r).unwrap(), compute_fit(bigger).unwrap());
        prop_assert!(b.threads >= a.threads);
        prop_assert!(!b.swapping || a.swapping);
    }

    #[test]
    fn swapping_means_one_worker_overflows(r in request()) {
        let f = compute_fit(r).unwrap();
        let one = r.fixed_bytes as u128 + r.per_worker_bytes as u128;
        prop_assert_eq!(f.swapping, one > f.budget_bytes as u128);
        if !f.swapping && r.per_worker_bytes > 0 {
            // What it chose fits, and one more would not (unless capped by want).
            let used = r.fixed_bytes as u128 + f.threads as u128 * r.per_worker_bytes as u128;
            prop_assert!(used <= f.budget_bytes as u128);
            if f.threads < r.want {
                prop_assert!(used + r.per_worker_bytes as u128 > f.budget_bytes as u128);
            }
        }
    }
}
