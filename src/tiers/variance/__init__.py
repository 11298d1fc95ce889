"""variance"""
