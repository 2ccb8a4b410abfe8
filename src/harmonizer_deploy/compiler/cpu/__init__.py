"""compiler/cpu"""
