"""compiler/web"""
