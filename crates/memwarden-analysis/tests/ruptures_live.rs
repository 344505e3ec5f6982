//! PELT against the reference implementation, the `ruptures` Python package, run live on the
//! same series. Skipped, with the reason printed, where Python or ruptures is missing (CI
//! installs both: see .ci/setup).

mod common;

use std::process::Command;

use memwarden_analysis::pelt::{PeltParams, pelt, pelt_reference};

const SCRIPT: &str = r#"
import json, sys
import numpy as np
import ruptures as rpt
cases = json.load(open(sys.argv[1]))
out = []
for c in cases:
    x = np.array(c["x"], dtype=np.float64)
    algo = rpt.Pelt(model="l2", min_size=c["min_size"], jump=c["jump"]).fit(x)
    out.append([int(b) for b in algo.predict(pen=c["pen"])])
json.dump(out, sys.stdout)
"#;

fn ruptures_available() -> Result<(), String> {
    let out = Command::new("python3")
        .args(["-c", "import ruptures, numpy"])
        .output()
        .map_err(|e| format!("python3 cannot run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ruptures is not installed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

fn run_ruptures(cases: &[(Vec<f64>, PeltParams)]) -> Vec<Vec<usize>> {
    let dir = std::env::temp_dir().join(format!("memwarden-ruptures-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("cases.json");
    let json: Vec<serde_json::Value> = cases
        .iter()
        .map(|(x, p)| {
            serde_json::json!({"x": x, "pen": p.penalty, "min_size": p.min_size, "jump": p.jump})
        })
        .collect();
    std::fs::write(&input, serde_json::to_vec(&json).unwrap()).unwrap();
    let out = Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(&input)
        .output()
        .expect("python3 runs");
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        out.status.success(),
        "ruptures failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ruptures prints JSON")
}

#[test]
fn same_breakpoints_as_ruptures() {
    if let Err(why) = ruptures_available() {
        panic!("{why}: `bash .ci/setup` installs it");
    }
    let cases = common::comparison_cases();
    let expected = run_ruptures(&cases);
    if std::env::var_os("MEMWARDEN_PRINT_RUPTURES").is_some() {
        // For refreshing the checked-in answers in pelt_checked_in.rs.
        println!("{}", serde_json::to_string(&expected).unwrap());
    }
    let mut mismatches = Vec::new();
    for (i, ((x, p), want)) in cases.iter().zip(&expected).enumerate() {
        let fast = pelt(x, p).unwrap();
        let reference = pelt_reference(x, p).unwrap();
        if &fast != want || &reference != want {
            mismatches.push(format!(
                "case {i} (n={}, {:?}): ruptures {:?}, pelt {:?}, reference {:?}",
                x.len(),
                p,
                want,
                fast,
                reference
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    eprintln!("{} series agree with ruptures", cases.len());
}
