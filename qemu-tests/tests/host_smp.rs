//! The host's application processors: every CPU the MADT lists comes up with its own
//! virtualization on (QEMU multi-threaded TCG on AMD-V, Bochs on VT-x), a CPU that does not
//! answer its start-up IPIs is reported failed while the others come up, and one CPU stays
//! as before. The console's `cpus` and `GET /api/v1/system`'s `cpu_list` show each CPU.

use keel_qemu_tests::http;
use keel_qemu_tests::{Bochs, Machine, Qemu, artifacts, check};

/// The rows of the `cpus` table (lines after the `N CPUs (ACPI MADT)` title that start
/// with a CPU index).
fn cpu_rows(out: &str) -> Vec<String> {
    // The CPU table ends at its `online:` summary; the load table (`cpu  load(5s)  vcpus`)
    // follows it.
    out.lines()
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with("online:"))
        .map(str::trim_start)
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_owned)
        .collect()
}

/// The `cpus:` boot log line (printed before the banner).
fn boot_log_line(m: &mut Machine) -> String {
    format!("cpus: {}", m.expect_line("cpus: "))
}

#[test]
fn four_cpus_come_up_with_amd_v_on_each() {
    let a = artifacts();
    let port = http::free_port();
    let mut m = Qemu::seabios(&a.image)
        .defmt_elf(&a.elf)
        .cpus(4)
        .multi_threaded_tcg()
        .args(["-nic".to_owned(), http::nic_arg("virtio-net-pci", port)])
        .spawn()
        .unwrap();
    let line = boot_log_line(&mut m);
    m.expect_banner();
    check!(
        m,
        line.starts_with("cpus: 4 online (apic ids 0, 1, 2, 3)") && !line.contains("failed"),
        "boot log: {line:?}"
    );
    http::await_api(&mut m, port);
    let out = m.command("cpus");
    let rows = cpu_rows(&out);
    check!(m, rows.len() == 4, "expected 4 CPU rows:\n{out}");
    for (i, row) in rows.iter().enumerate() {
        let fields: Vec<&str> = row.split_whitespace().collect();
        check!(
            m,
            fields.first() == Some(&i.to_string().as_str())
                && fields.get(2) == Some(&"online")
                && row.contains("on (AMD-V)"),
            "row {i}: {row:?}\n{out}"
        );
    }
    check!(m, out.contains("online: 4 of 4"), "{out}");

    // The API lists the same CPUs.
    let r = http::request(port, "GET", "/api/v1/system", Some(&a.api_token), None).expect("GET");
    check!(m, r.status == 200, "GET /api/v1/system: {r:?}");
    let body: serde_json::Value = serde_json::from_str(&r.body).expect("JSON body");
    let list = body["cpu_list"].as_array().cloned().unwrap_or_default();
    check!(m, list.len() == 4, "cpu_list: {}", body["cpu_list"]);
    for (i, cpu) in list.iter().enumerate() {
        check!(
            m,
            cpu["index"] == i
                && cpu["apic_id"] == i
                && cpu["state"] == "online"
                && cpu["reason"].is_null()
                && cpu["virtualization"] == "on"
                && cpu["virtualization_detail"] == "AMD-V",
            "cpu_list[{i}]: {cpu}"
        );
    }
}

#[test]
fn a_cpu_that_does_not_answer_is_failed_and_the_others_come_up() {
    let mut m = Qemu::pvh(&artifacts().elf)
        .cpus(3)
        .multi_threaded_tcg()
        .append("keel.smp.fake_cpu=9 keel.smp.selftest=kick")
        .spawn()
        .unwrap();
    let line = boot_log_line(&mut m);
    // Printed after the banner, before the first prompt.
    let selftest = m.expect_line("smp self-test: ");
    m.expect_prompt();
    check!(
        m,
        line.starts_with("cpus: 3 online (apic ids 0, 1, 2); apic id 9 failed: no answer"),
        "boot log: {line:?}"
    );
    let out = m.command("cpus");
    let rows = cpu_rows(&out);
    check!(m, rows.len() == 4, "expected 4 CPU rows:\n{out}");
    let online = rows.iter().filter(|r| r.contains(" online ")).count();
    check!(m, online == 3, "expected 3 online rows:\n{out}");
    check!(
        m,
        rows.last().is_some_and(|r| r.starts_with("3 ")
            && r.contains(" 9 ")
            && r.contains("failed: no answer")),
        "the fake CPU (APIC id 9) should be index 3, failed:\n{out}"
    );
    // The scheduler's hooks: every AP ran the work `start_ap_work` gave it, and woke on a
    // kick (its timer masked, so nothing else wakes it).
    check!(
        m,
        selftest == "2 of 2 APs ran their work, 2 woke on a kick",
        "self-test: {selftest:?}"
    );
    // The console still works after the failed start.
    let out = m.command("version");
    check!(m, out.contains("Keel"), "version after boot: {out:?}");
}

#[test]
fn one_cpu_boots_as_before() {
    let mut m = Qemu::pvh(&artifacts().elf).cpus(1).spawn().unwrap();
    let line = boot_log_line(&mut m);
    let b = m.expect_banner();
    check!(m, b.number("cpus") == Some(1), "banner:\n{}", b.text);
    check!(
        m,
        line == "cpus: 1 online (apic ids 0)",
        "boot log: {line:?}"
    );
    let out = m.command("cpus");
    let rows = cpu_rows(&out);
    check!(
        m,
        rows.len() == 1 && rows[0].contains("online") && rows[0].contains("boot CPU"),
        "{out}"
    );
}

#[test]
fn bochs_two_cpus_come_up_with_vmx_on_each() {
    let a = artifacts();
    let mut m = Bochs::disk(&a.image)
        .defmt_elf(&a.elf)
        .cpus(2)
        .spawn()
        .unwrap();
    let line = boot_log_line(&mut m);
    m.expect_banner();
    check!(
        m,
        line.starts_with("cpus: 2 online (apic ids 0, 1)") && !line.contains("failed"),
        "boot log: {line:?}"
    );
    let out = m.command("cpus");
    let rows = cpu_rows(&out);
    check!(m, rows.len() == 2, "expected 2 CPU rows:\n{out}");
    for row in &rows {
        check!(
            m,
            row.contains(" online ") && row.contains("on (VT-x)"),
            "{row:?}\n{out}"
        );
    }
}
