"""compiler/gpu"""
