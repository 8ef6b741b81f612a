/* Startup code for the QEMU boards firmware/ targets (Cortex-M3/M4F/M55).
 *
 * The vector table sits at address 0, where these boards read the initial
 * stack pointer and reset vector. Reset_Handler turns the FPU on, sets up
 * .data and .bss, runs C++ constructors, opens the semihosting streams
 * (newlib's librdimon: printf and fopen go to the host running QEMU), calls
 * main() and exits QEMU with main's status.
 */
#include <stdint.h>
#include <stdlib.h>

extern uint32_t __data_load, __data_start, __data_end;
extern uint32_t __bss_start__, __bss_end__;
extern uint32_t __StackTop;

extern int main(int argc, char** argv);
extern void __libc_init_array(void);
extern void initialise_monitor_handles(void);

/* crtbegin/crti are not linked (-nostartfiles): provide what they would. */
void* __dso_handle = 0;
void _init(void) {}
void _fini(void) {}

/* Any fault or unexpected interrupt: print which exception and the program
 * counter it interrupted (the stacked PC; arm-none-eabi-addr2line -e ELF
 * names the function), then tell QEMU to stop (semihosting SYS_EXIT with
 * reason "run-time error") instead of spinning forever. */
static void SemihostingWrite0(const char* text) {
  register uint32_t op __asm__("r0") = 0x04; /* SYS_WRITE0 */
  register const char* arg __asm__("r1") = text;
  __asm__ volatile("bkpt 0xab" : "+r"(op) : "r"(arg) : "memory");
}

static void AppendHex(char* out, uint32_t value) {
  for (int i = 0; i < 8; ++i) out[i] = "0123456789abcdef"[(value >> (28 - 4 * i)) & 0xFu];
}

__attribute__((used)) void FaultReport(const uint32_t* frame, uint32_t ipsr) {
  char line[] = "fault: exception 0x........ at pc 0x........\n";
  AppendHex(line + 19, ipsr & 0x1FFu);
  AppendHex(line + 36, frame[6]); /* r0-r3, r12, lr, pc, xpsr */
  SemihostingWrite0(line);
  for (;;) {
    register uint32_t op __asm__("r0") = 0x18;         /* SYS_EXIT */
    register uint32_t reason __asm__("r1") = 0x20023;  /* RunTimeErrorUnknown */
    __asm__ volatile("bkpt 0xab" : : "r"(op), "r"(reason) : "memory");
  }
}

/* The exception frame is on the stack the interrupted code used. */
__attribute__((naked)) void Default_Handler(void) {
  __asm__ volatile(
      "tst lr, #4\n"
      "ite eq\n"
      "mrseq r0, msp\n"
      "mrsne r0, psp\n"
      "mrs r1, ipsr\n"
      "b FaultReport\n");
}

/* Handlers a program may define (SysTick_Handler: firmware/trainer's timer). */
void SysTick_Handler(void) __attribute__((weak, alias("Default_Handler")));

__attribute__((noreturn)) void Reset_Handler(void) {
#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE)
  /* CPACR: full access to coprocessors 10 and 11 (FPU, and MVE on M55). */
  volatile uint32_t* const cpacr = (volatile uint32_t*)0xE000ED88u;
  *cpacr |= 0xFu << 20;
  __asm__ volatile("dsb\n isb" ::: "memory");
#endif
  for (uint32_t *src = &__data_load, *dst = &__data_start; dst < &__data_end;) {
    *dst++ = *src++;
  }
  for (uint32_t* dst = &__bss_start__; dst < &__bss_end__;) *dst++ = 0;
  __libc_init_array();
  initialise_monitor_handles();
  exit(main(0, 0));
}

/* Cortex-M vector table: initial SP, reset, then the 14 system exceptions
 * (all faults go to Default_Handler). No device interrupts are enabled. */
__attribute__((section(".isr_vector"), used))
void (*const g_vectors[16])(void) = {
    (void (*)(void))(&__StackTop),
    Reset_Handler,
    Default_Handler, /* NMI */
    Default_Handler, /* HardFault */
    Default_Handler, /* MemManage */
    Default_Handler, /* BusFault */
    Default_Handler, /* UsageFault */
    Default_Handler, /* SecureFault (Armv8-M) */
    0, 0, 0,
    Default_Handler, /* SVCall */
    Default_Handler, /* DebugMonitor */
    0,
    Default_Handler, /* PendSV */
    SysTick_Handler,
};
