// Builds the C shim bound by Deno.dlopen: zig-out/lib/libnkb.so (Zig 0.17.0). The published
// libraries are the same build for other targets: ./nkbw dist.
const std = @import("std");

const c_sources = [_][]const u8{
    "ffi/nl_io.c",
    "ffi/netlink.c",
    "ffi/bpf_filter.c",
    "ffi/filter_open.c",
    "ffi/host_clock.c",
    "ffi/ring_groups.c",
    "ffi/frame.c",
    "ffi/xsk.c",
    "ffi/tx.c",
    "ffi/give.c",
    "ffi/refresh.c",
    "ffi/lock_order.c",
    "ffi/core.c",
    "ffi/dest.c",
    "ffi/datapath.c",
    "ffi/api.c",
    "ffi/attach.c",
    "ffi/lookup.c",
    "ffi/policy.c",
    "ffi/registry.c",
    "ffi/registry_parse.c",
    "ffi/registry_read.c",
    "ffi/xdp_features.c",
    "ffi/resolve.c",
};

const c_flags = [_][]const u8{
    "-std=gnu11",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wshadow",
    "-fno-strict-aliasing",
    // Assertions stay on in every build: they guard the boundary with JavaScript.
    "-UNDEBUG",
    // Only NKB_API entries are the library's interface.
    "-fvisibility=hidden",
};

pub fn build(b: *std.Build) void {
    // Native target by default; glibc is what the host's Deno links against.
    const target = b.standardTargetOptions(.{});
    const optimize = b.standardOptimizeOption(.{});
    // -Dstrip: no symbol table beyond the dynamic one and no debug information, which would
    // also carry the build directory's path (./nkbw dist builds must not depend on it).
    const strip = b.option(bool, "strip", "Strip symbols and debug information") orelse false;

    const mod = b.createModule(.{
        .target = target,
        .optimize = optimize,
        .link_libc = true,
        .pic = true,
        .strip = strip,
    });
    mod.addIncludePath(b.path("ffi"));
    mod.addCSourceFiles(.{ .files = &c_sources, .flags = &c_flags });

    // No .version: the output is a plain libnkb.so, without soname symlinks.
    const lib = b.addLibrary(.{
        .linkage = .dynamic,
        .name = "nkb",
        .root_module = mod,
    });
    // -z defs: a symbol missing from c_sources fails the link, not the later dlopen.
    lib.link_z_defs = true;
    b.installArtifact(lib);
}
